import pytest

from campaigns.factories import CampaignFactory
from campaigns.models import Campaign, CampaignStatus
from core import broker
from core.messages import CampaignCreated
from core.models import OutboxEvent

pytestmark = pytest.mark.django_db

VALID = {"title": "New Year Sale", "body": "20% off", "kind": "offer", "segment": {"type": "ALL_USERS"}, "data": {"x": 1}}


def test_create_answers_201_queued_and_queues_one_campaign_created_event(service_client):
    response = service_client.post("/api/v1/campaigns/", VALID, format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["targeted"], body["delivered"], body["title"]) == ("queued", 0, 0, "New Year Sale")
    [event] = OutboxEvent.objects.all()
    assert (event.topic, event.key) == (broker.OFFERS_CREATED, str(body["id"]))
    assert CampaignCreated.decode(bytes(event.payload)) == CampaignCreated(campaign_id=body["id"])


def test_seed_offers_route_takes_the_seed_body(service_client):
    response = service_client.post("/offers", {"title": "New Year Sale", "segment": {"type": "ALL_USERS"}}, format="json")

    assert response.status_code == 201
    campaign = Campaign.objects.get(id=response.json()["id"])
    assert (campaign.kind, campaign.body, campaign.segment) == ("offer", "", {"type": "ALL_USERS"})
    assert OutboxEvent.objects.filter(topic=broker.OFFERS_CREATED).count() == 1


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"segment": {"type": "NOPE"}}, "segment", "valid types: ALL_USERS, USER_IDS, ATTRIBUTE"),
        ({"segment": {"type": "ATTRIBUTE", "attribute": "c", "op": "gt", "value": 1}}, "segment", "valid ops: eq, in"),
        ({"segment": {"type": "USER_IDS", "ids": []}}, "segment", "non-empty"),
        ({"segment": {"type": "USER_IDS", "ids": [str(i) for i in range(10_001)]}}, "segment", "at most 10000"),
        ({"title": ""}, "title", "blank"),
        ({"title": "x" * 201}, "title", "200"),
        ({"body": "x" * 2001}, "body", "2000"),
        ({"kind": "promo"}, "kind", "valid choices: offer, alert, reminder"),
        ({"data": {"blob": "x" * 16400}}, "data", "limit is 16384 bytes"),
        ({"escalate": {"after_seconds": 0, "channels": ["email"]}}, "escalate", "greater than or equal to 1"),
        ({"escalate": {"after_seconds": 60, "channels": ["sms"]}}, "escalate", "valid choices"),
        ({"escalate": {"after_seconds": 60, "channels": []}}, "escalate", "at least 1"),
        ({"escalate": {"after_seconds": 60, "channels": ["email"], "unless": "clicked"}}, "escalate", "valid choices"),
        ({"escalate": "email"}, "escalate", "dictionary"),
    ],
)
def test_bad_input_is_400_with_valid_choices_and_stores_nothing(service_client, change, field, says):
    response = service_client.post("/api/v1/campaigns/", {**VALID, **change}, format="json")

    assert response.status_code == 400
    assert says in str(response.json()[field]), response.json()
    assert Campaign.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_list_filters_by_status_and_kind_and_detail_shows_counts(service_client):
    done = CampaignFactory(status=CampaignStatus.COMPLETED, kind="alert", targeted=3, delivered=2, skipped=1)
    CampaignFactory(status=CampaignStatus.QUEUED, kind="alert")
    CampaignFactory(status=CampaignStatus.COMPLETED, kind="offer")

    listed = service_client.get("/api/v1/campaigns/?status=completed&kind=alert").json()["results"]
    detail = service_client.get(f"/api/v1/campaigns/{done.id}/").json()

    assert [c["id"] for c in listed] == [done.id]
    assert {k: detail[k] for k in ("targeted", "delivered", "skipped", "failed")} == {
        "targeted": 3, "delivered": 2, "skipped": 1, "failed": 0,
    }


@pytest.mark.parametrize(("query", "says"), [
    ("status=done", '"done" is not a valid choice; valid choices: scheduled, queued, dispatching, dispatched, completed, cancelled.'),
    ("kind=promo", '"promo" is not a valid choice; valid choices: follow, mention, like, custom, offer, alert, reminder, '
                   'or a kind registered at /api/v1/kinds/.'),
    ("kind=", '"" is not a valid choice; valid choices: follow, mention, like, custom, offer, alert, reminder, '
              'or a kind registered at /api/v1/kinds/.'),
])
def test_an_unknown_filter_value_is_400_listing_the_valid_ones(service_client, query, says):
    CampaignFactory()

    response = service_client.get(f"/api/v1/campaigns/?{query}")

    assert response.status_code == 400
    assert response.json() == {query.partition("=")[0]: [says]}


def test_query_parameters_do_not_filter_a_detail_route(service_client):
    campaign = CampaignFactory(status=CampaignStatus.QUEUED)

    assert service_client.get(f"/api/v1/campaigns/{campaign.id}/?status=completed").status_code == 200
    assert service_client.get(f"/api/v1/campaigns/{campaign.id}/?status=done").status_code == 200
    assert service_client.post(f"/api/v1/campaigns/{campaign.id}/cancel/?kind=alert").status_code == 200


@pytest.mark.parametrize("status", [CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED])
def test_cancel_an_unfinished_campaign(service_client, status):
    campaign = CampaignFactory(status=status)

    response = service_client.post(f"/api/v1/campaigns/{campaign.id}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CANCELLED and campaign.cancelled_at is not None


def test_cancelling_a_completed_campaign_is_409(service_client):
    campaign = CampaignFactory(status=CampaignStatus.COMPLETED)

    response = service_client.post(f"/api/v1/campaigns/{campaign.id}/cancel/")

    assert response.status_code == 409
    assert "completed" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED


@pytest.mark.parametrize("path", ["/api/v1/campaigns/999/", "/api/v1/campaigns/abc/", "/api/v1/campaigns/999/cancel/"])
def test_unknown_campaign_is_404(service_client, path):
    response = service_client.post(path) if path.endswith("cancel/") else service_client.get(path)

    assert response.status_code == 404


@pytest.mark.parametrize(("method", "path"), [("post", "/api/v1/campaigns/"), ("get", "/api/v1/campaigns/"), ("post", "/offers")])
def test_anonymous_is_401(anonymous_client, method, path):
    assert getattr(anonymous_client, method)(path, VALID, format="json").status_code == 401


def test_a_campaign_carries_its_escalation(service_client):
    """Issue 15: a campaign may carry `escalate`, as a notification does."""
    escalate = {"after_seconds": 3600, "channels": ["email", "email"], "unless": "seen"}
    response = service_client.post("/api/v1/campaigns/", {**VALID, "escalate": escalate}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["escalate"] == {"after_seconds": 3600, "channels": ["email"], "unless": "seen"}
    campaign = Campaign.objects.get()
    assert (campaign.escalation.after_seconds, campaign.escalation.channels) == (3600, ("email",))
    assert service_client.post("/api/v1/campaigns/", VALID, format="json").json()["escalate"] is None
