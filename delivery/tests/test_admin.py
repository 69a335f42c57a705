import pytest
from django.contrib.auth import get_user_model

from campaigns.factories import CampaignFactory
from campaigns.models import CampaignStatus
from core import clock
from core.factories import DeadLetterFactory
from core.messages import NotificationTask
from core.models import DeadLetterStatus, OutboxEvent, ScheduledItem
from delivery.factories import ChannelDeliveryFactory
from delivery.models import ChannelDelivery
from delivery.services import SEND

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True,
                                                             is_superuser=True))
    return client


def test_dead_letter_list_counts_waiting_letters_by_reason(staff_client):
    DeadLetterFactory.create_batch(2, invalid_payload=True)
    DeadLetterFactory(reason="permanent failure")
    DeadLetterFactory(reason="permanent failure", status=DeadLetterStatus.DISCARDED)

    response = staff_client.get("/admin/core/deadletter/?reason=invalid+payload")

    assert response.status_code == 200
    assert b"invalid payload: 2, permanent failure: 1" in response.content


def test_replay_action_queues_the_channel_again_and_discard_resolves(staff_client):
    ChannelDeliveryFactory(notification_id="n1", recipient_external_id="1", status="dead", attempts=4)
    replayed = DeadLetterFactory(notification_id="n1", channel="webhook", recipient_external_id="1")
    discarded = DeadLetterFactory(notification_id="n2", channel="webhook")

    staff_client.post("/admin/core/deadletter/", {"action": "replay", "_selected_action": [replayed.id]})
    staff_client.post("/admin/core/deadletter/", {"action": "discard", "_selected_action": [discarded.id]})

    replayed.refresh_from_db()
    discarded.refresh_from_db()
    assert (replayed.status, discarded.status) == (DeadLetterStatus.REPLAYED, DeadLetterStatus.DISCARDED)
    channel = ChannelDelivery.objects.get(notification_id="n1")
    assert (channel.status, channel.attempts) == ("retrying", 0)
    [item] = ScheduledItem.objects.all()  # the sender sends it when due: now
    assert (item.kind, item.payload, item.due_at <= clock.now()) == (SEND, {"channel_delivery": channel.id}, True)


def test_replaying_a_send_that_was_delivered_meanwhile_sends_nothing(staff_client):
    ChannelDeliveryFactory(notification_id="n1", recipient_external_id="1", status="sent", attempts=2)
    letter = DeadLetterFactory(notification_id="n1", channel="webhook", recipient_external_id="1")

    staff_client.post("/admin/core/deadletter/", {"action": "replay", "_selected_action": [letter.id]})

    assert OutboxEvent.objects.count() == 0 and not ScheduledItem.objects.exists()
    assert ChannelDelivery.objects.get(notification_id="n1").status == "sent"


def test_replaying_an_invalid_payload_republishes_it_to_its_topic(staff_client, settings):
    task = NotificationTask(notification_id="x", recipient="1", kind="like", message="m", created_at="2026-01-01T00:00:00+00:00")
    letter = DeadLetterFactory(invalid_payload=True, original_topic=f"{settings.KAFKA_TOPIC_PREFIX}notifications.send",
                     recipient_external_id="1", payload=task.encode())

    staff_client.post("/admin/core/deadletter/", {"action": "replay", "_selected_action": [letter.id]})

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
                                  "core/outboxevent", "campaigns/campaign", "core/deadletter"])
def test_admin_pages_load(staff_client, page):
    assert staff_client.get(f"/admin/{page}/").status_code == 200


def test_digest_windows_are_listed_with_their_events(staff_client):
    from delivery.models import DigestEvent, DigestWindow

    now = clock.now()
    window = DigestWindow.objects.create(recipient_external_id="owner", key="post:42", kind="like", opened_at=now,
                                         closes_at=now)
    for i in range(3):
        DigestEvent.objects.create(window=window, notification_id=f"like-{i}", sender=f"actor{i}", created_at=now)
    listing = staff_client.get("/admin/delivery/digestwindow/?closed_at__isnull=True")
    assert listing.status_code == 200 and b"post:42" in listing.content
    page = staff_client.get(f"/admin/delivery/digestwindow/{window.pk}/change/")
    assert page.status_code == 200 and b"like-2 from actor2" in page.content


def test_held_notifications_and_waiting_sends_are_listed_and_cancelled_digests_are_left(staff_client, service_client):
    """Issue 15: the admin lists held and scheduled items and cancels them."""
    from core.factories import ScheduledItemFactory
    from delivery.models import Delivery
    from inbox.factories import RecipientFactory

    RecipientFactory(external_id="ann")
    accepted = service_client.post("/api/v1/notifications/", {
        "recipient": "ann", "sender": "bob", "kind": "custom", "message": "later", "delay_seconds": 3600}, format="json")
    assert accepted.status_code == 202, accepted.content
    held_send = ChannelDeliveryFactory(recipient_external_id="ann", channel="email")
    send_item = ScheduledItemFactory(key=f"send:{held_send.id}", lane="email", due_at=clock.now(),
                                     payload={"channel_delivery": held_send.id, "held": "quiet hours until 08:00"})
    digest_item = ScheduledItemFactory(kind="digest.close", key="digest:1", payload={"window": 1})

    listing = staff_client.get("/admin/core/scheduleditem/")
    assert listing.status_code == 200
    assert accepted.json()["id"].encode() in listing.content and b"quiet hours until 08:00" in listing.content
    assert staff_client.get("/admin/core/scheduleditem/?kind=notification.release").status_code == 200

    every = list(ScheduledItem.objects.values_list("id", flat=True))
    response = staff_client.post("/admin/core/scheduleditem/", {"action": "cancel_items", "_selected_action": every},
                                 follow=True)
    text = response.content.decode()
    assert "1 held notification(s), 1 send(s) and 0 campaign(s) cancelled." in text and "1 item(s) left" in text
    assert list(ScheduledItem.objects.values_list("id", flat=True)) == [digest_item.id]
    assert Delivery.objects.get(notification_id=accepted.json()["id"]).reason == "cancelled"
    assert ChannelDelivery.objects.get(id=held_send.id).status == "skipped"
    assert ChannelDelivery.objects.get(id=held_send.id).last_error == "cancelled"
    assert not ScheduledItem.objects.filter(id=send_item.id).exists()
    # Cancelled from the admin, the API says so too: DELETE is idempotent.
    assert service_client.delete(f"/api/v1/notifications/{accepted.json()['id']}/").status_code == 204


def test_an_item_gone_since_the_page_was_loaded_is_said_left(staff_client):
    from core.factories import ScheduledItemFactory

    gone = ScheduledItemFactory()
    selected = [gone.id]
    ScheduledItem.objects.filter(id=gone.id).delete()  # released and done meanwhile
    kept = ScheduledItemFactory(kind="digest.close", key="digest:9", payload={"window": 9})
    response = staff_client.post("/admin/core/scheduleditem/", {"action": "cancel_items",
                                                                "_selected_action": [*selected, kept.id]}, follow=True)
    assert "2 item(s) left" in response.content.decode()


def test_a_send_released_between_reading_and_cancelling_it_is_not_cancelled():
    from datetime import timedelta

    from core.factories import ScheduledItemFactory
    from delivery.services import _channel_send_cancel

    row = ChannelDeliveryFactory(channel="webhook")
    read = ScheduledItemFactory(key=f"send:{row.id}", payload={"channel_delivery": row.id})
    # The sender releases it meanwhile (under a lease): the cancel deletes nothing and skips nothing.
    ScheduledItem.objects.filter(id=read.id).update(releases=1, due_at=read.due_at + timedelta(seconds=60))
    assert _channel_send_cancel(item=read) is False
    assert ScheduledItem.objects.filter(id=read.id).exists()
    assert ChannelDelivery.objects.get(id=row.id).status == "pending"


def test_a_held_campaigns_part_cancels_the_campaign(staff_client, service_client):
    from inbox.factories import RecipientFactory

    RecipientFactory(external_id="tokyo", timezone="Asia/Tokyo")
    RecipientFactory(external_id="berlin", timezone="Europe/Berlin")
    created = service_client.post("/api/v1/campaigns/", {"title": "Morning", "segment": {"type": "ALL_USERS"},
                                                        "local_time": "09:00"}, format="json")
    assert created.status_code == 201, created.content
    parts = list(ScheduledItem.objects.filter(kind="campaign.release").values_list("id", flat=True))
    assert len(parts) == 2
    listing = staff_client.get("/admin/core/scheduleditem/?kind=campaign.release")
    assert b"campaign local_time 09:00 in Asia/Tokyo" in listing.content
    response = staff_client.post("/admin/core/scheduleditem/", {"action": "cancel_items", "_selected_action": parts[:1]},
                                 follow=True)
    assert "0 send(s) and 1 campaign(s) cancelled." in response.content.decode()
    assert service_client.get(f"/api/v1/campaigns/{created.json()['id']}/").json()["status"] == "cancelled"
    assert not ScheduledItem.objects.filter(kind="campaign.release").exists()  # both parts dropped
