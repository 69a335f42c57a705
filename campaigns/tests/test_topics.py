"""Sending to a topic: a campaign to its subscribers (the TOPIC segment), and POST /api/v1/notifications/
with `topic`."""

import pytest

from campaigns.models import Campaign
from campaigns.segments import segment_parse, segment_recipients
from core.models import OutboxEvent
from inbox.models import Subscription

pytestmark = pytest.mark.django_db

URL = "/api/v1/topics/post:42/subscribers/"


def test_the_topic_segment_reaches_the_subscribers_but_the_excluded(service_client):
    service_client.put(URL, {"recipients": ["1", "2", "3"]}, format="json")
    service_client.put("/api/v1/topics/other/subscribers/", {"recipients": ["4"]}, format="json")

    audience = segment_recipients(segment_parse({"type": "TOPIC", "key": "post:42", "exclude": ["2"]}))

    assert set(audience.values_list("external_id", flat=True)) == {"1", "3"}


def test_a_campaign_to_a_topic_is_accepted(service_client):
    response = service_client.post("/api/v1/campaigns/", {"title": "New reply", "segment": {"type": "TOPIC", "key": "post:42"}},
                                    format="json")

    assert response.status_code == 201, response.content
    assert response.json()["segment"] == {"type": "TOPIC", "key": "post:42"}


def test_a_notification_to_a_topic_is_a_campaign_to_its_subscribers_but_the_sender(service_client):
    response = service_client.post("/api/v1/notifications/", {
        "sender": "7", "topic": "post:42", "kind": "like", "message": "Tito liked the post", "data": {"post": 42}},
        format="json")

    assert response.status_code == 202, response.content
    campaign = Campaign.objects.get()
    assert response.json() == {"id": str(campaign.id), "topic": "post:42", "status": "accepted"}
    assert (campaign.sender, campaign.kind, campaign.title, campaign.body, campaign.data, campaign.segment) == (
        "7", "like", "", "Tito liked the post", {"post": 42}, {"type": "TOPIC", "key": "post:42", "exclude": ["7"]})
    assert OutboxEvent.objects.count() == 1  # its CampaignCreated, for the dispatcher


@pytest.mark.parametrize(("change", "field"), [
    ({"topic": "a b"}, "topic"),
    ({"topic": "x" * 201}, "topic"),
    ({"recipient": "1"}, "recipient"),
    ({"send_at": "2030-01-01T00:00:00Z"}, "send_at"),
    ({"digest": {"key": "tk", "window_seconds": 3}}, "digest"),  # found from outside: it was silently ignored
    ({"escalate": {"after_seconds": 60, "channels": ["email"]}}, "escalate"),
    ({"kind": "offer"}, "kind"),
    ({"kind": "nope"}, "kind"),
    ({"kind": "li\x00ke"}, "kind"),  # a name no kind can have is never looked up (NUL fails the query)
    ({"message": ""}, "message"),
    ({"sender": "a b"}, "sender"),
    ({"data": "x"}, "data"),
])
def test_a_bad_notification_to_a_topic_is_a_400_naming_the_field_and_changes_nothing(service_client, change, field):
    body = {"sender": "7", "topic": "post:42", "kind": "like", "message": "m", **change}

    response = service_client.post("/api/v1/notifications/", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Campaign.objects.exists() and not OutboxEvent.objects.exists()


def test_a_notification_to_one_recipient_still_goes_the_usual_way(service_client):
    response = service_client.post("/api/v1/notifications/", {"sender": "7", "recipient": "1", "kind": "like",
                                                               "message": "m"}, format="json")

    assert response.status_code == 202 and response.json()["status"] == "accepted"
    assert not Campaign.objects.exists() and not Subscription.objects.exists()


def test_the_campaign_list_filters_by_a_topic_notifications_kind(service_client):
    service_client.post("/api/v1/notifications/", {"sender": "7", "topic": "post:42", "kind": "like", "message": "m"},
                        format="json")

    likes = service_client.get("/api/v1/campaigns/?kind=like")
    unknown = service_client.get("/api/v1/campaigns/?kind=nope")

    assert likes.status_code == 200 and [c["kind"] for c in likes.json()["results"]] == ["like"]
    assert unknown.status_code == 400 and "kind" in unknown.json()
