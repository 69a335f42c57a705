import pytest
from django.contrib.auth import get_user_model

from campaigns.factories import CampaignFactory
from campaigns.models import CampaignStatus
from delivery import broker
from delivery.messages import NotificationTask
from delivery.models import ChannelDelivery, DeadLetter, DeadLetterStatus, OutboxEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True,
                                                             is_superuser=True))
    return client


def _letter(**fields) -> DeadLetter:
    defaults = {"reason": "retries exhausted", "original_topic": "notifications.send", "payload": b"{}"}
    return DeadLetter.objects.create(**{**defaults, **fields})


def test_dead_letter_list_counts_waiting_letters_by_reason(staff_client):
    _letter(reason="invalid payload")
    _letter(reason="invalid payload")
    _letter(reason="permanent failure")
    _letter(reason="permanent failure", status=DeadLetterStatus.DISCARDED)

    response = staff_client.get("/admin/delivery/deadletter/?reason=invalid+payload")

    assert response.status_code == 200
    assert b"invalid payload: 2, permanent failure: 1" in response.content


def test_replay_action_queues_the_channel_again_and_discard_resolves(staff_client):
    ChannelDelivery.objects.create(notification_id="n1", channel="webhook", recipient_external_id="1", status="dead",
                                   attempts=4)
    replayed = _letter(notification_id="n1", channel="webhook", recipient_external_id="1")
    discarded = _letter(notification_id="n2", channel="webhook")

    staff_client.post("/admin/delivery/deadletter/", {"action": "replay", "_selected_action": [replayed.id]})
    staff_client.post("/admin/delivery/deadletter/", {"action": "discard", "_selected_action": [discarded.id]})

    replayed.refresh_from_db()
    discarded.refresh_from_db()
    assert (replayed.status, discarded.status) == (DeadLetterStatus.REPLAYED, DeadLetterStatus.DISCARDED)
    channel = ChannelDelivery.objects.get(notification_id="n1")
    assert (channel.status, channel.attempts) == ("retrying", 0)
    [event] = OutboxEvent.objects.all()
    assert event.topic == broker.NOTIFICATIONS_RETRY


def test_replaying_a_send_that_was_delivered_meanwhile_sends_nothing(staff_client):
    ChannelDelivery.objects.create(notification_id="n1", channel="webhook", recipient_external_id="1", status="sent",
                                   attempts=2)
    letter = _letter(notification_id="n1", channel="webhook", recipient_external_id="1")

    staff_client.post("/admin/delivery/deadletter/", {"action": "replay", "_selected_action": [letter.id]})

    assert OutboxEvent.objects.count() == 0
    assert ChannelDelivery.objects.get(notification_id="n1").status == "sent"


def test_replaying_an_invalid_payload_republishes_it_to_its_topic(staff_client, settings):
    task = NotificationTask(notification_id="x", recipient="1", kind="like", message="m", created_at="2026-01-01T00:00:00+00:00")
    letter = _letter(reason="invalid payload", original_topic=f"{settings.KAFKA_TOPIC_PREFIX}notifications.send",
                     recipient_external_id="1", payload=task.encode())

    staff_client.post("/admin/delivery/deadletter/", {"action": "replay", "_selected_action": [letter.id]})

    [event] = OutboxEvent.objects.all()
    assert (event.topic, bytes(event.payload)) == ("notifications.send", task.encode())


def test_campaign_admin_cancel_action(staff_client):
    running, done = CampaignFactory(status=CampaignStatus.DISPATCHED), CampaignFactory(status=CampaignStatus.COMPLETED)

    response = staff_client.post("/admin/campaigns/campaign/", {"action": "cancel_campaigns",
                                                                "_selected_action": [running.id, done.id]}, follow=True)

    running.refresh_from_db()
    done.refresh_from_db()
    assert (running.status, done.status) == (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED)
    assert b"only an unfinished campaign can be cancelled" in response.content


@pytest.mark.parametrize("page", ["inbox/recipient", "inbox/notification", "delivery/delivery", "delivery/channeldelivery",
                                  "delivery/outboxevent", "campaigns/campaign", "delivery/deadletter"])
def test_admin_pages_load(staff_client, page):
    assert staff_client.get(f"/admin/{page}/").status_code == 200
