"""Endpoints that take 10 s to answer hold up nobody else: channel sends run off the poll loop,
from the scheduler, at most CHANNEL_HOST_CONCURRENCY at a time per endpoint host."""

import time

import pytest
from django.db.models import F

from conftest import WebhookReceiver, wait_until
from delivery.models import ChannelDelivery, ChannelDeliveryStatus
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

SLOW_ENDPOINTS = 50


def _send(client, recipient: str, message: str) -> str:
    answer = client.post("/api/v1/notifications/", {"sender": "s", "recipient": recipient, "kind": "like",
                                                    "message": message}, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def test_fifty_endpoints_that_take_ten_seconds_hold_up_no_one_else(stack, service_client, webhook_receiver, settings):
    slow = [WebhookReceiver() for _ in range(SLOW_ENDPOINTS)]  # 50 endpoint hosts (host:port), each 10 s to answer
    try:
        for i, receiver in enumerate(slow):
            Recipient.objects.create(external_id=f"slow{i}", push_endpoint=f"{receiver.url}/sleep")
        Recipient.objects.bulk_create([Recipient(external_id=f"fast{i}", push_endpoint=f"{webhook_receiver.url}/ok")
                                       for i in range(20)])
        one_host = slow[0]  # and 8 more recipients behind the first slow host: its lane holds 4 at a time
        Recipient.objects.bulk_create([Recipient(external_id=f"same-host{i}", push_endpoint=f"{one_host.url}/sleep")
                                       for i in range(8)])
        worker = stack.start("run_worker", env={"WEBHOOK_TIMEOUT_SECONDS": "15", "CHANNEL_SEND_CONCURRENCY": "64",
                                                "CHANNEL_HOST_CONCURRENCY": "4"})
        warm = _send(service_client, "warm-up", "first")
        wait_until(lambda: Notification.objects.filter(notification_id=warm).exists(), timeout=60, what="worker running")

        slow_ids = [_send(service_client, f"slow{i}", "slow") for i in range(SLOW_ENDPOINTS)]
        slow_ids += [_send(service_client, f"same-host{i}", "slow") for i in range(8)]
        started = time.monotonic()
        # Meanwhile: in-app notifications of other users, and webhooks to a host that answers at once.
        in_app = []
        while time.monotonic() - started < 8:
            in_app.append(_send(service_client, f"user{len(in_app) % 37}", f"m{len(in_app)}"))
            time.sleep(0.05)  # a steady trickle of requests (the load, not a wait for an effect)
        fast_ids = [_send(service_client, f"fast{i}", "fast") for i in range(20)]

        wait_until(lambda: len(webhook_receiver.requests_for("/ok")) >= 20, timeout=10,
                   what="the fast host's webhooks while 50 slow ones are in flight")
        assert time.monotonic() - started < 15  # before any slow endpoint could have let a thread go twice

        rows = Notification.objects.filter(notification_id__in=in_app).annotate(latency=F("delivered_at") - F("created_at"))
        assert rows.count() == len(in_app)
        latencies = sorted(row.latency.total_seconds() for row in rows)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"slow endpoints: {len(in_app)} in-app notifications meanwhile, p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms")
        assert p99 < 1.0

        sent = ChannelDelivery.objects.filter(notification_id__in=slow_ids, status=ChannelDeliveryStatus.SENT)
        wait_until(lambda: sent.count() == len(slow_ids), timeout=60, what="every slow webhook sent")
        # One request per notification: no timeout, no rebalance, nothing sent twice.
        keys = [key for receiver in slow for _, key, _ in receiver.requests_for("/sleep")]
        assert sorted(keys) == sorted(slow_ids)
        assert one_host.max_active == 4 and all(r.max_active == 1 for r in slow[1:])
        assert sorted(key for _, key, _ in webhook_receiver.requests_for("/ok")) == sorted(fast_ids)
        assert worker.poll() is None
        assert stack.log_of(worker).count("assigned") == 1, "a rebalance happened"
    finally:
        for receiver in slow:
            receiver.close()


def test_a_send_in_flight_when_the_worker_is_sigkilled_is_sent_again_after_its_lease(stack, service_client, webhook_receiver):
    """The lease path at its worst moment: the request reached the endpoint, the worker died before
    recording it. The send is released again when the lease ends (60 s at least), with the same key."""
    import signal

    webhook_receiver.sleep_seconds = 3.0
    Recipient.objects.create(external_id="leased", push_endpoint=f"{webhook_receiver.url}/sleep")
    worker = stack.start("run_worker")
    notification_id = _send(service_client, "leased", "in flight")
    wait_until(lambda: webhook_receiver.requests_for("/sleep"), timeout=60, what="the send in flight")
    stack.stop(worker, signal.SIGKILL)
    delivery = ChannelDelivery.objects.get(notification_id=notification_id)
    assert delivery.status == ChannelDeliveryStatus.PENDING  # never recorded

    stack.start("run_worker")
    wait_until(lambda: ChannelDelivery.objects.get(id=delivery.id).status == ChannelDeliveryStatus.SENT, timeout=120,
               what="the send repeated after its lease and recorded")
    keys = [key for _, key, _ in webhook_receiver.requests_for("/sleep")]
    assert keys == [notification_id, notification_id]  # sent again (at least once), same Idempotency-Key
    assert ChannelDelivery.objects.get(id=delivery.id).attempts == 1
