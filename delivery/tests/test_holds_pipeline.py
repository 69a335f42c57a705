"""Quiet hours and escalations with real processes (broker, relay, worker) and a local webhook receiver:
held sends wait in the scheduler and go out once, when due; a worker SIGKILLed meanwhile loses none."""

import signal
from datetime import datetime, timedelta

import pytest

from conftest import wait_until
from core import clock
from delivery.models import ChannelDelivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline


def _send(client, recipient: str, kind: str = "like", **fields) -> str:
    answer = client.post("/api/v1/notifications/", {"sender": "s", "recipient": recipient, "kind": kind,
                                                    "message": "hello", **fields}, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def _received(receiver, path: str, notification_id: str) -> list:
    return [r for r in receiver.requests_for(path) if r[1] == notification_id]


def _in_inbox(notification_id: str) -> bool:
    return Notification.objects.filter(notification_id=notification_id).exists()


def _channel(notification_id: str) -> ChannelDelivery | None:
    return ChannelDelivery.objects.filter(notification_id=notification_id, channel="webhook").first()


def test_quiet_hours_hold_the_webhook_until_they_end_and_an_urgent_kind_goes_at_once(stack, service_client,
                                                                                      webhook_receiver):
    Recipient.objects.create(external_id="night", push_endpoint=f"{webhook_receiver.url}/night", timezone="UTC")
    now = clock.now()
    hours = {"start": (now - timedelta(hours=1)).strftime("%H:%M"), "end": (now + timedelta(hours=2)).strftime("%H:%M")}
    assert service_client.put("/api/v1/recipients/night/preferences/", {"quiet_hours": hours},
                              format="json").status_code == 200
    assert service_client.post("/api/v1/kinds/", {"name": "security", "urgent": True}, format="json").status_code == 201
    stack.start("run_relay")
    stack.start("run_worker")

    held = _send(service_client, "night")
    wait_until(lambda: _in_inbox(held), timeout=60, what="the held notification in the inbox at once")
    urgent = _send(service_client, "night", kind="security")
    wait_until(lambda: _received(webhook_receiver, "/night", urgent), timeout=30, what="the urgent webhook at once")
    assert _received(webhook_receiver, "/night", held) == []  # sent after it, it went out; the held one did not

    trace = service_client.get(f"/api/v1/notifications/{held}/").json()
    [channel] = trace["channels"]
    end = datetime.fromisoformat(channel["next_attempt_at"])
    assert end.strftime("%H:%M") == hours["end"] and end > clock.now()
    assert (trace["status"], channel["status"]) == ("scheduled", "pending")
    assert channel["held"].startswith("quiet hours until ") and "quiet hours until" in trace["reason"]

    # The window's end, reached by moving a second worker's clock (CLOCK_OFFSET_SECONDS) past it.
    offset = (end - clock.now()).total_seconds() + 1
    stack.start("run_worker", env={"DEBUG": "true", "CLOCK_OFFSET_SECONDS": f"{offset:.3f}"})
    wait_until(lambda: _received(webhook_receiver, "/night", held), timeout=60, what="the held webhook when the window ends")
    wait_until(lambda: _channel(held).status == "sent", what="recorded as sent")
    assert len(_received(webhook_receiver, "/night", held)) == 1 and _channel(held).attempts == 1


def test_an_escalation_is_sent_once_if_unread_and_never_if_read(stack, service_client, webhook_receiver):
    for name in ("unread", "read", "killed"):
        Recipient.objects.create(external_id=name, push_endpoint=f"{webhook_receiver.url}/{name}")
    escalate = {"after_seconds": 3, "channels": ["webhook"], "unless": "read"}
    stack.start("run_relay")
    worker = stack.start("run_worker")

    unread = _send(service_client, "unread", escalate=escalate)
    read = _send(service_client, "read", escalate=escalate)
    wait_until(lambda: _in_inbox(read) and _in_inbox(unread), timeout=60, what="both in the inbox")
    answer = service_client.post(f"/api/v1/recipients/read/notifications/{read}/read/")
    assert answer.status_code == 200  # read within about a second of landing, well before the 3 s
    assert webhook_receiver.requests == []  # neither went out with the in-app notification

    wait_until(lambda: _received(webhook_receiver, "/unread", unread), timeout=30, what="the unread one escalated")
    wait_until(lambda: _channel(read).status == "skipped", timeout=30, what="the read one's escalation cancelled")
    assert _channel(read).last_error == "read before escalation" and webhook_receiver.requests_for("/read") == []
    wait_until(lambda: _channel(unread).status == "sent", what="the escalation recorded")
    unread_delivery = Notification.objects.get(notification_id=unread).delivered_at
    assert _channel(unread).updated_at - unread_delivery >= timedelta(seconds=3)  # not before its time
    assert len(_received(webhook_receiver, "/unread", unread)) == 1

    # SIGKILLed after settling it, before the escalation is due: the next worker sends it, once.
    killed = _send(service_client, "killed", escalate=escalate)
    wait_until(lambda: _channel(killed) is not None, timeout=30, what="the escalation settled and scheduled")
    stack.stop(worker, signal.SIGKILL)
    assert webhook_receiver.requests_for("/killed") == []
    stack.start("run_worker")
    wait_until(lambda: _received(webhook_receiver, "/killed", killed), timeout=60, what="escalated by the next worker")
    wait_until(lambda: _channel(killed).status == "sent", what="recorded as sent")
    assert len(_received(webhook_receiver, "/killed", killed)) == 1 and _channel(killed).attempts == 1
    assert len(_received(webhook_receiver, "/unread", unread)) == 1 and webhook_receiver.requests_for("/read") == []
