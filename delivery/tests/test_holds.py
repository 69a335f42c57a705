"""Quiet hours and escalations when settling (delivery/holds.py), without the broker: the in-app row
lands at once; the held sends are `pending` with their item due later; an escalation is sent when due
unless the notification was read (or seen) first; the trace says why a send waits."""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from campaigns.factories import CampaignFactory
from core import clock, scheduler
from core.messages import EscalationSpec, NotificationTask
from core.models import ScheduledItem
from delivery import selectors
from delivery.models import ChannelDelivery, ChannelDeliveryStatus
from delivery.services import SEND, channel_sends_of, deliveries_settle, send_key
from inbox.factories import RecipientFactory
from inbox.models import Notification, NotificationKind, Preference

pytestmark = pytest.mark.django_db


def _task(notification_id: str, recipient: str, kind: str = "like", **fields) -> NotificationTask:
    return NotificationTask(notification_id=notification_id, recipient=recipient, kind=kind, sender="2",
                            message="hello", created_at=timezone.now().isoformat(), **fields)


def _due_sends():
    return channel_sends_of(items=scheduler.release(kind=SEND, limit=100, lease=timedelta(seconds=60)))


def _due_at(notification_id: str, channel: str) -> datetime | None:
    row = ChannelDelivery.objects.get(notification_id=notification_id, channel=channel)
    return ScheduledItem.objects.filter(key=send_key(row.id)).values_list("due_at", flat=True).first()


def _metric(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _quiet_now(tz: str = "UTC") -> dict:
    """Quiet hours in `tz` from an hour ago to the next whole minute two hours ahead (by the clock)."""
    from zoneinfo import ZoneInfo

    local = clock.now().astimezone(ZoneInfo(tz))
    return {"start": (local - timedelta(hours=1)).strftime("%H:%M"), "end": (local + timedelta(hours=2)).strftime("%H:%M")}


def _window_end(hours: dict, tz: str = "UTC") -> datetime:
    from zoneinfo import ZoneInfo

    local = clock.now().astimezone(ZoneInfo(tz))
    end = local.replace(hour=int(hours["end"][:2]), minute=int(hours["end"][3:]), second=0, microsecond=0)
    return (end if end > local else end + timedelta(days=1)).astimezone(dt_timezone.utc)


def test_quiet_hours_hold_email_and_webhook_and_let_in_app_land():
    recipient = RecipientFactory(external_id="q", email="q@example.com", push_endpoint="https://hooks.example.com/q",
                                 timezone="Asia/Tokyo")
    hours = _quiet_now("Asia/Tokyo")
    Preference.objects.create(recipient=recipient, quiet_hours=hours)

    result = deliveries_settle(tasks=[_task("n-q", "q")])

    assert Notification.objects.filter(notification_id="n-q").exists()  # in-app at once
    end = _window_end(hours, "Asia/Tokyo")
    assert _due_at("n-q", "email") == _due_at("n-q", "webhook") == end
    assert result.held == {("email", "quiet_hours"): 1, ("webhook", "quiet_hours"): 1}
    assert _due_sends() == []  # nothing due now
    trace = selectors.notification_trace(notification_id="n-q")
    assert trace.status == "scheduled" and trace.reason.startswith("email: quiet hours until ")
    assert {(c.channel, c.status, c.next_attempt_at, c.held) for c in trace.channels} == {
        (ch, "pending", end, f"quiet hours until {end.isoformat()}") for ch in ("email", "webhook")}
    with clock.moved(seconds=(end - clock.now()).total_seconds() + 1):
        assert sorted(s.channel for s in _due_sends()) == ["email", "webhook"]  # sent when the window ends


def test_outside_quiet_hours_and_urgent_kinds_go_at_once():
    quiet = RecipientFactory(external_id="u", email="u@example.com", timezone="")
    Preference.objects.create(recipient=quiet, quiet_hours=_quiet_now())
    NotificationKind.objects.create(name="security", urgent=True)
    calm = RecipientFactory(external_id="calm", email="c@example.com")
    hours = _quiet_now()
    Preference.objects.create(recipient=calm, quiet_hours={"start": hours["end"], "end": hours["start"]})  # the rest of the day
    alert = CampaignFactory(kind="alert", status="dispatched")

    result = deliveries_settle(tasks=[_task("n-urgent", "u", kind="security"), _task("n-calm", "calm"),
                                      NotificationTask(notification_id=f"{alert.id}:u", recipient="u", campaign_id=alert.id)])

    assert result.held == {}
    assert sorted(s.outgoing.notification_id for s in _due_sends()) == sorted(["n-urgent", "n-calm", f"{alert.id}:u"])


def test_a_campaign_is_held_too():
    recipient = RecipientFactory(external_id="cq", email="cq@example.com")
    Preference.objects.create(recipient=recipient, quiet_hours=_quiet_now())
    offer = CampaignFactory(kind="offer", status="dispatched")
    deliveries_settle(tasks=[NotificationTask(notification_id=f"{offer.id}:cq", recipient="cq", campaign_id=offer.id)])
    assert Notification.objects.filter(notification_id=f"{offer.id}:cq").exists()
    assert _due_sends() == []


def test_an_escalation_is_sent_when_due_if_still_unread():
    RecipientFactory(external_id="e", email="e@example.com", push_endpoint="https://hooks.example.com/e")
    spec = EscalationSpec(after_seconds=3600, channels=("webhook",))

    before = clock.now()
    result = deliveries_settle(tasks=[_task("n-e", "e", escalate=spec)])

    assert result.held == {("webhook", "escalation"): 1}
    [email] = _due_sends()  # the channel not named goes at once
    assert email.channel == "email"
    scheduler.done([email.item])  # (sent: as the sender records it)
    due = _due_at("n-e", "webhook")
    assert before + timedelta(seconds=3600) <= due <= clock.now() + timedelta(seconds=3600)
    trace = selectors.notification_trace(notification_id="n-e")
    [webhook] = [c for c in trace.channels if c.channel == "webhook"]
    assert (webhook.next_attempt_at, webhook.held) == (due, "escalation: sent then unless read")
    with clock.moved(seconds=3599):
        assert _due_sends() == []
    Notification.objects.filter(notification_id="n-e").update(seen_at=timezone.now())  # seen is not read
    with clock.moved(seconds=3601):
        [send] = _due_sends()
    assert (send.channel, send.outgoing.notification_id, send.attempt) == ("webhook", "n-e", 1)


def test_reading_first_cancels_the_escalation():
    RecipientFactory(external_id="r", email="r@example.com", push_endpoint="https://hooks.example.com/r")
    spec = EscalationSpec(after_seconds=60, channels=("email", "webhook"))
    deliveries_settle(tasks=[_task("n-r", "r", escalate=spec), _task("n-s", "r", escalate=EscalationSpec(
        after_seconds=60, channels=("email",), unless="seen"))])
    [webhook_of_s] = _due_sends()  # n-s's webhook was not named: at once
    assert (webhook_of_s.outgoing.notification_id, webhook_of_s.channel) == ("n-s", "webhook")
    scheduler.done([webhook_of_s.item])
    Notification.objects.filter(notification_id="n-r").mark_read()
    Notification.objects.filter(notification_id="n-s").mark_seen()

    cancelled_before = _metric("notifications_escalations_total", channel="email", result="cancelled")
    with clock.moved(seconds=61):
        assert _due_sends() == []
    assert _metric("notifications_escalations_total", channel="email", result="cancelled") == cancelled_before + 2
    rows = ChannelDelivery.objects.filter(notification_id__in=["n-r", "n-s"], channel="email").order_by("notification_id")
    assert [(r.status, r.last_error, r.attempts) for r in rows] == [
        ("skipped", "read before escalation", 0), ("skipped", "seen before escalation", 0)]
    assert ChannelDelivery.objects.get(notification_id="n-r", channel="webhook").status == ChannelDeliveryStatus.SKIPPED
    assert not ScheduledItem.objects.filter(kind=SEND).exists()
    trace = selectors.notification_trace(notification_id="n-r")
    assert trace.status == "delivered" and {c.last_error for c in trace.channels} == {"read before escalation"}


def test_an_escalation_without_an_inbox_row_is_sent():
    """Opted out of in-app: nothing can be read, so the escalation goes out when due."""
    recipient = RecipientFactory(external_id="x", email="x@example.com")
    Preference.objects.create(recipient=recipient, channels={"in_app": False})
    deliveries_settle(tasks=[_task("n-x", "x", escalate=EscalationSpec(after_seconds=5, channels=("email",)))])
    assert _due_sends() == []
    with clock.moved(seconds=6):
        [send] = _due_sends()
    assert send.channel == "email"


def test_an_escalation_due_in_quiet_hours_waits_for_their_end():
    recipient = RecipientFactory(external_id="eq", email="eq@example.com")
    hours = _quiet_now()
    Preference.objects.create(recipient=recipient, quiet_hours=hours)
    deliveries_settle(tasks=[_task("n-eq", "eq", escalate=EscalationSpec(after_seconds=60, channels=("email",)))])
    end = _window_end(hours)
    assert _due_at("n-eq", "email") == end
    [channel] = selectors.notification_trace(notification_id="n-eq").channels
    assert channel.held == f"escalation: sent then unless read; quiet hours until {end.isoformat()}"
    with clock.moved(seconds=(end - clock.now()).total_seconds() + 1):
        [send] = _due_sends()  # still unread: sent, once
        assert _due_sends() == []
    assert send.outgoing.notification_id == "n-eq"


def test_a_repeat_of_the_task_schedules_nothing_twice():
    RecipientFactory(external_id="d", email="d@example.com")
    task = _task("n-d", "d", escalate=EscalationSpec(after_seconds=30, channels=("email",)))
    deliveries_settle(tasks=[task])
    deliveries_settle(tasks=[task])
    assert ScheduledItem.objects.filter(kind=SEND).count() == 1


def test_an_escalated_task_is_not_folded_into_its_kinds_digest():
    NotificationKind.objects.create(name="review", digest_window_seconds=60)
    RecipientFactory(external_id="dg", email="dg@example.com")
    result = deliveries_settle(tasks=[_task("n-dg", "dg", kind="review",
                                            escalate=EscalationSpec(after_seconds=30, channels=("email",)))])
    assert (result.delivered, result.digested) == (1, 0)


def test_a_campaigns_escalation_holds_each_recipients_named_channels_until_due_unless_read():
    """Issue 15: escalation on campaigns. Plain recipients (in-app only) are settled as a set; the
    ones with an address as tasks, whose named channels wait, each cancelled by its own read."""
    from core.messages import CampaignChunk

    offer = CampaignFactory(kind="offer", status="dispatched",
                            escalate={"after_seconds": 600, "channels": ["email"], "unless": "read"})
    RecipientFactory(external_id="c1", email="c1@example.com")
    RecipientFactory(external_id="c2", email="c2@example.com")
    RecipientFactory(external_id="c3", email="")  # in-app only
    result = deliveries_settle(chunks=[(CampaignChunk(offer.id, ("c1", "c2", "c3")), None)])

    assert result.delivered == 3 and result.held == {("email", "escalation"): 2}
    assert Notification.objects.filter(notification_id__startswith=f"{offer.id}:").count() == 3
    assert _due_sends() == []  # nothing at once
    Notification.objects.filter(notification_id=f"{offer.id}:c2").mark_read()
    with clock.moved(seconds=601):
        [send] = _due_sends()
    assert (send.outgoing.notification_id, send.channel) == (f"{offer.id}:c1", "email")
    assert ChannelDelivery.objects.get(notification_id=f"{offer.id}:c2").last_error == "read before escalation"


def test_a_cancelled_campaigns_waiting_sends_are_skipped_never_sent():
    """Found from outside: a campaign cancelled while its escalations waited still sent them."""
    from campaigns.models import Campaign
    from campaigns.services import campaign_cancel
    from core.messages import CampaignChunk

    offer = CampaignFactory(kind="offer", status="dispatched", targeted=2,  # (one recipient still to settle)
                            escalate={"after_seconds": 60, "channels": ["webhook"]})
    RecipientFactory(external_id="w1", email="", push_endpoint="https://hooks.example.com/w1")
    deliveries_settle(chunks=[(CampaignChunk(offer.id, ("w1",)), None)])
    assert ChannelDelivery.objects.get(notification_id=f"{offer.id}:w1").status == "pending"
    campaign_cancel(campaign=Campaign.objects.get(id=offer.id))
    with clock.moved(seconds=61):
        assert _due_sends() == []
    row = ChannelDelivery.objects.get(notification_id=f"{offer.id}:w1")
    assert (row.status, row.last_error, row.attempts) == ("skipped", "campaign cancelled", 0)
    assert not ScheduledItem.objects.filter(kind=SEND).exists()
