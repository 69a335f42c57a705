"""Settling a batch without the broker: one NotificationContent becomes the inbox row, the webhook
body and the stored channel content; every skip is written to the ledger with its reason."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from campaigns.factories import CampaignFactory
from core import scheduler
from core.messages import ChannelRetry, NotificationTask
from delivery.models import ChannelDelivery, ChannelDeliveryStatus, Delivery
from delivery.services import SEND, channel_retries_schedule, channel_sends_of, deliveries_settle
from inbox.factories import RecipientFactory
from inbox.models import Notification, Preference

pytestmark = pytest.mark.django_db

ACCEPTED = datetime(2026, 11, 21, 20, 55, 1, 123456, tzinfo=timezone.utc)


def _task(notification_id: str, recipient: str, **fields) -> NotificationTask:
    return NotificationTask(notification_id=notification_id, recipient=recipient, kind="like", sender="2",
                            message="Tito liked your post", data={"post": 7}, created_at=ACCEPTED.isoformat(), **fields)


def _due_sends():
    """The sends the scheduler releases now (as the worker's sender would)."""
    return channel_sends_of(items=scheduler.release(kind=SEND, limit=100, lease=timedelta(seconds=60)))


def test_one_content_for_the_inbox_the_webhook_and_the_stored_row(settings):
    settings.PUSH_GATEWAY_URL = ""
    RecipientFactory(external_id="1", email="", push_endpoint="https://hooks.example.com/n")

    result = deliveries_settle(tasks=[_task("n-1", "1")])

    row = Notification.objects.get(notification_id="n-1")
    assert (row.kind, row.sender, row.title, row.message, row.data, row.campaign_id, row.created_at) == (
        "like", "2", "", "Tito liked your post", {"post": 7}, None, ACCEPTED)
    assert result.sends_scheduled == 1
    [send] = _due_sends()
    assert (send.channel, send.item.lane) == ("webhook", "hooks.example.com")
    expected = {"id": "n-1", "recipient": "1", "kind": "like", "sender": "2", "title": "", "message": "Tito liked your post",
                "data": {"post": 7}, "campaign": None, "created_at": ACCEPTED.isoformat()}
    assert send.outgoing.as_json() == orjson.dumps(expected)  # the body, byte for byte (key order too)
    assert ChannelDelivery.objects.get(notification_id="n-1").content == expected


def test_a_campaign_task_carries_the_campaign_content():
    campaign = CampaignFactory(title="Sale", body="50% off", kind="alert", data={"code": "X"}, status="dispatched")
    recipient = RecipientFactory(external_id="c1", email="c1@example.com")
    notification_id = f"{campaign.id}:c1"

    result = deliveries_settle(tasks=[NotificationTask(notification_id=notification_id, recipient="c1",
                                                       campaign_id=campaign.id)])

    row = Notification.objects.get(notification_id=notification_id)
    assert (row.recipient_id, row.kind, row.sender, row.title, row.message, row.data, row.campaign_id, row.created_at) == (
        recipient.pk, "alert", "", "Sale", "50% off", {"code": "X"}, campaign.id, campaign.created_at)
    assert result.sends_scheduled == 1
    [send] = _due_sends()
    assert (send.channel, send.item.lane, send.outgoing.email, send.outgoing.content.title) == ("email", "email", "c1@example.com", "Sale")
    assert orjson.loads(send.outgoing.as_json())["campaign"] == campaign.id


def test_each_skip_is_in_the_ledger_with_its_reason():
    live = CampaignFactory(status="dispatched")
    cancelled = CampaignFactory(status="cancelled")
    opted_out = RecipientFactory(external_id="kind-off", email="")
    Preference.objects.create(recipient=opted_out, kinds={"offer": False})
    nothing_left = RecipientFactory(external_id="all-off", email="")
    Preference.objects.create(recipient=nothing_left, channels={"in_app": False})
    RecipientFactory(external_id="r", email="")

    result = deliveries_settle(tasks=[
        NotificationTask(notification_id="999:r", recipient="r", campaign_id=999),
        NotificationTask(notification_id=f"{cancelled.id}:r", recipient="r", campaign_id=cancelled.id),
        NotificationTask(notification_id=f"{live.id}:gone", recipient="gone", campaign_id=live.id),
        NotificationTask(notification_id=f"{live.id}:kind-off", recipient="kind-off", campaign_id=live.id),
        NotificationTask(notification_id=f"{live.id}:all-off", recipient="all-off", campaign_id=live.id),
        NotificationTask(notification_id=f"{live.id}:r", recipient="r", campaign_id=live.id),
    ])

    assert dict(Delivery.objects.values_list("notification_id", "reason")) == {
        "999:r": "campaign not found",
        f"{cancelled.id}:r": "campaign cancelled",
        f"{live.id}:gone": "recipient deleted",
        f"{live.id}:kind-off": "opted out of offer",
        f"{live.id}:all-off": "opted out of every channel",
        f"{live.id}:r": "",
    }
    assert (result.delivered, result.skipped, result.sends_scheduled) == (1, 5, 0)
    assert list(Notification.objects.values_list("notification_id", flat=True)) == [f"{live.id}:r"]


def test_a_retry_of_content_stored_in_the_earlier_form_sends_the_same_body():
    """Channel deliveries stored before the content was the payload are retried with the same body."""
    RecipientFactory(external_id="1", email="", push_endpoint="https://hooks.example.com/n")
    ChannelDelivery.objects.create(
        notification_id="n-1", channel="webhook", recipient_external_id="1", status=ChannelDeliveryStatus.RETRYING,
        attempts=1, content={"notification_id": "n-1", "recipient": "1", "kind": "like", "message": "hi", "title": "",
                             "sender": "2", "data": {}, "campaign_id": None, "created_at": ACCEPTED.isoformat()})

    assert channel_retries_schedule(retries=[ChannelRetry("n-1", "webhook", "1", 2, 0)]) == 1
    [send] = _due_sends()

    assert send.attempt == 2
    assert send.outgoing.as_json() == orjson.dumps({
        "id": "n-1", "recipient": "1", "kind": "like", "sender": "2", "title": "", "message": "hi", "data": {},
        "campaign": None, "created_at": ACCEPTED.isoformat()})
