"""Delays, cancels and expiry through the real pipeline (API in process, relay and worker processes,
the real broker and PostgreSQL): `delay_seconds: 3` is absent after 1 s and present within 3 to 6 s;
a cancelled one is never delivered; an expired one is skipped, `expired`, and never lands in the inbox;
a webhook still retrying when its notification expires is not sent again."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import wait_until
from delivery.models import ChannelDelivery, Delivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

URL = "/api/v1/notifications/"


def _send(client, recipient: str, message: str, **fields) -> dict:
    answer = client.post(URL, {"sender": "s", "recipient": recipient, "kind": "like", "message": message, **fields},
                         format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()


def _delivered(notification_id: str) -> bool:
    return Notification.objects.filter(notification_id=notification_id).exists()


def _trace(client, notification_id: str) -> dict:
    return client.get(f"{URL}{notification_id}/").json()


def test_a_delay_of_3_s_is_absent_after_1_s_and_present_within_3_to_6_s(stack, service_client):
    stack.start("run_relay")
    stack.start("run_worker")
    warm = _send(service_client, "d1", "warm-up")["id"]  # the worker has joined its group and delivers
    wait_until(lambda: _delivered(warm), timeout=30, what="a first notification delivered")

    before = time.monotonic()
    answer = _send(service_client, "d1", "three seconds later", delay_seconds=3)
    after = time.monotonic()
    assert answer["status"] == "scheduled"
    notification_id = answer["id"]
    assert _trace(service_client, notification_id)["status"] == "scheduled"

    seen: list[tuple[float, bool]] = []  # (seconds since the request, delivered?) at each look

    def look() -> bool:
        delivered = _delivered(notification_id)
        seen.append((time.monotonic() - before, delivered))
        return delivered

    wait_until(look, timeout=6 - (time.monotonic() - after), interval=0.05, what="the delayed notification")
    appeared = seen[-1][0]
    print(f"delay_seconds 3: delivered {appeared:.2f} s after the request")
    assert [t for t, delivered in seen if delivered and t < 3] == []
    assert any(1 <= t < 3 and not delivered for t, delivered in seen)  # absent after 1 s
    assert 3 <= appeared <= 6
    assert _trace(service_client, notification_id)["status"] == "delivered"


def test_a_cancelled_notification_is_never_delivered(stack, service_client):
    stack.start("run_relay")
    stack.start("run_worker")
    cancelled = _send(service_client, "c1", "cancelled", delay_seconds=2)["id"]
    assert service_client.delete(f"{URL}{cancelled}/").status_code == 204
    # Due a second after it, to the same recipient (the same lane and partition): once it is delivered,
    # the release loop has run past the cancelled one's time.
    later = _send(service_client, "c1", "later", delay_seconds=3)["id"]

    wait_until(lambda: _delivered(later), timeout=20, what="the later notification delivered")
    assert not _delivered(cancelled)
    trace = _trace(service_client, cancelled)
    assert (trace["status"], trace["in_app"]) == ("cancelled", None)
    assert service_client.delete(f"{URL}{later}/").status_code == 409


def test_a_task_the_worker_reads_after_its_expires_at_is_skipped_expired(stack, service_client):
    """The worker runs an hour ahead (the scheduler's clock, CLOCK_OFFSET_SECONDS): to it, a
    notification expiring in ten minutes has expired."""
    stack.start("run_relay")
    stack.start("run_worker", env={"DEBUG": "true", "CLOCK_OFFSET_SECONDS": "3600"})
    expires_at = (timezone.now() + timedelta(minutes=10)).isoformat()
    expired = _send(service_client, "e1", "expired", expires_at=expires_at)["id"]
    kept = _send(service_client, "e1", "kept")["id"]  # the same partition, after it

    wait_until(lambda: _delivered(kept), timeout=30, what="the notification without expiry delivered")
    wait_until(lambda: Delivery.objects.filter(notification_id=expired).exists(), what="the expired one settled")
    trace = _trace(service_client, expired)
    assert (trace["status"], trace["reason"], trace["in_app"]) == ("skipped", "expired", None)
    assert not _delivered(expired)


def test_a_webhook_still_retrying_when_its_notification_expires_is_not_sent_again(stack, service_client,
                                                                                 webhook_receiver):
    """An endpoint that answers 503: retried with backoff (0.3 s, doubling) until the notification
    expires 3 s after it was sent; the next attempt is not made, and the channel says `expired`."""
    Recipient.objects.create(external_id="x1", push_endpoint=f"{webhook_receiver.url}/down")
    stack.start("run_relay")
    stack.start("run_worker", env={"RETRY_MAX_RETRIES": "30"})
    warm = _send(service_client, "w1", "warm-up")["id"]  # the worker has joined its group: it settles at once
    wait_until(lambda: _delivered(warm), timeout=30, what="a first notification delivered")
    expires_at = timezone.now() + timedelta(seconds=3)
    notification_id = _send(service_client, "x1", "expiring", expires_at=expires_at.isoformat())["id"]

    row = ChannelDelivery.objects.filter(notification_id=notification_id)
    wait_until(lambda: row.filter(status="skipped").exists(), timeout=30, what="the webhook given up as expired")
    channel = row.get()
    assert channel.last_error == "expired" and 1 <= channel.attempts < 30
    attempts = len(webhook_receiver.requests_for("/down"))
    assert attempts == channel.attempts
    assert timezone.now() >= expires_at
    trace = _trace(service_client, notification_id)
    assert trace["in_app"] is not None and trace["dead_letters"] == []  # the inbox had it in time
    assert [(c["status"], c["last_error"]) for c in trace["channels"]] == [("skipped", "expired")]
