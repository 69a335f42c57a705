"""`expires_at`: a notification is never delivered after it. Settled after it: skipped, `expired` (a
ledger row, no inbox row, no channel send); an external send still pending or retrying then: not sent,
its channel delivery skipped, `expired`. Time moved through the scheduler's clock."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core import clock, scheduler, topics
from core.messages import NotificationTask
from core.models import OutboxEvent, ScheduledItem
from delivery import services
from delivery.channels import TransientChannelError
from delivery.models import ChannelDelivery, Delivery
from inbox import services as inbox_services
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/{}/"


def _send(client, recipient: str = "r", **fields) -> str:
    body = {"sender": "s", "recipient": recipient, "kind": "like", "message": "hi", **fields}
    answer = client.post("/api/v1/notifications/", body, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def _in(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def _settle_queued() -> services.BatchResult:
    """What the worker does with the tasks in the outbox."""
    events = OutboxEvent.objects.filter(topic=topics.SEND.logical, published_at__isnull=True)
    tasks = [NotificationTask.decode(bytes(p)) for p in events.values_list("payload", flat=True)]
    events.update(published_at=timezone.now())
    return services.deliveries_settle(tasks=tasks)


def _released_sends() -> list[services.ChannelSend]:
    items = scheduler.release(kind=services.SEND, limit=10, lease=timedelta(seconds=60))
    return services.channel_sends_of(items=items)


def _trace(client, notification_id: str) -> dict:
    return client.get(URL.format(notification_id)).json()


def test_a_task_settled_after_its_expires_at_is_skipped_expired(service_client):
    expiring = _send(service_client, expires_at=_in(minutes=10))
    lasting = _send(service_client, expires_at=_in(hours=2))
    plain = _send(service_client)

    with clock.moved(minutes=11):  # the worker reads them late
        result = _settle_queued()

    assert (result.delivered, result.skipped) == (2, 1)
    ledger = Delivery.objects.get(notification_id=expiring)
    assert (ledger.outcome, ledger.reason) == ("skipped", "expired")
    assert set(Notification.objects.values_list("notification_id", flat=True)) == {lasting, plain}
    trace = _trace(service_client, expiring)
    assert (trace["status"], trace["reason"], trace["in_app"], trace["channels"]) == ("skipped", "expired", None, [])


def test_an_expired_task_sends_no_external_channel(service_client):
    Recipient.objects.create(external_id="hooked", email="h@example.com", push_endpoint="https://hooks.example.com/in")
    notification_id = _send(service_client, "hooked", expires_at=_in(minutes=1))
    with clock.moved(minutes=2):
        _settle_queued()
    assert not ChannelDelivery.objects.exists() and not ScheduledItem.objects.exists()
    assert _trace(service_client, notification_id)["reason"] == "expired"


def test_a_held_notification_released_after_its_expires_at_is_skipped_expired(service_client):
    """The release was late (the workers were down): the worker drops it rather than deliver it late."""
    notification_id = _send(service_client, delay_seconds=60, expires_at=_in(minutes=5))
    with clock.moved(minutes=6):
        assert inbox_services.notifications_release_due() == 1
        _settle_queued()
    assert _trace(service_client, notification_id)["reason"] == "expired"
    assert not Notification.objects.exists()


@pytest.fixture
def hooked(db):
    return Recipient.objects.create(external_id="hooked", push_endpoint="https://hooks.example.com/in")


def test_a_pending_send_whose_notification_expired_is_not_sent(service_client, hooked):
    notification_id = _send(service_client, "hooked", expires_at=_in(minutes=10))
    _settle_queued()  # in time: the inbox row, and the webhook's send pending
    assert Notification.objects.filter(notification_id=notification_id).exists()
    [item] = ScheduledItem.objects.filter(kind=services.SEND)
    assert item.payload["expires_at"] == NotificationTask.decode(bytes(OutboxEvent.objects.get().payload)).expires_at

    with clock.moved(minutes=11):  # the sender was busy (or down) until after it expired
        assert _released_sends() == []

    [channel] = _trace(service_client, notification_id)["channels"]
    assert (channel["channel"], channel["status"], channel["attempts"], channel["last_error"], channel["next_attempt_at"]) == (
        "webhook", "skipped", 0, "expired", None)
    assert not ScheduledItem.objects.exists()


def test_a_retry_after_the_expiry_is_not_made(service_client, hooked):
    notification_id = _send(service_client, "hooked", expires_at=_in(minutes=10))
    _settle_queued()
    [send] = _released_sends()
    services.channel_outcomes_record(outcomes=[(send, TransientChannelError("HTTP 503"))])
    assert ChannelDelivery.objects.get().status == "retrying"

    with clock.moved(minutes=1):  # the retry, still in time
        [again] = _released_sends()
    assert again.attempt == 2
    services.channel_outcomes_record(outcomes=[(again, TransientChannelError("HTTP 503"))])

    with clock.moved(minutes=11):
        assert _released_sends() == []
    row = ChannelDelivery.objects.get()
    assert (row.status, row.attempts, row.last_error) == ("skipped", 2, "expired")
    assert _trace(service_client, notification_id)["channels"][0]["status"] == "skipped"


def test_a_send_without_expires_at_is_sent_whenever_it_comes_due(service_client, hooked):
    _send(service_client, "hooked")
    _settle_queued()
    assert "expires_at" not in ScheduledItem.objects.get(kind=services.SEND).payload
    with clock.moved(days=30):
        assert len(_released_sends()) == 1


def test_a_send_item_with_an_unreadable_expires_at_is_sent(service_client, hooked):
    """Never written so by us: it does not stop the send."""
    _send(service_client, "hooked")
    _settle_queued()
    ScheduledItem.objects.filter(kind=services.SEND).update(payload={
        "channel_delivery": ChannelDelivery.objects.get().id, "expires_at": "not a time"})
    assert len(_released_sends()) == 1
