"""Digests through the real processes (API, broker, worker, PostgreSQL): many notifications with one
digest key in the same second become exactly one inbox notification, even with the worker SIGKILLed
while the window is open; its external channel is sent once, for the digest."""

import signal

import pytest
from django.db.models import Count

from conftest import wait_until
from delivery.models import ChannelDelivery, Delivery, DigestWindow
from delivery.selectors import notification_trace
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline


def _like(client, actor: int, *, window: int):
    answer = client.post("/api/v1/notifications/", {
        "sender": f"actor{actor}", "recipient": "owner", "kind": "like", "data": {"post": 42},
        "digest": {"key": "post:42", "window_seconds": window}}, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def _the_one_digest(count: int) -> Notification:
    row = wait_until(lambda: Notification.objects.filter(recipient__external_id="owner").first(), timeout=60,
                     what="the digest delivered")
    summary = row.data["digest"]
    assert (summary["count"], summary["actor_count"], len(summary["actors"])) == (count, count, count)
    assert row.message == f"{summary['actors'][0]} and {count - 1} others liked your post"
    return row


def test_twenty_likes_in_the_same_second_make_one_notification_sent_once_by_email(stack, service_client):
    stack.start("run_worker")
    Recipient.objects.create(external_id="owner", email="owner@example.com")
    ids = [_like(service_client, i, window=3) for i in range(20)]

    row = _the_one_digest(20)
    assert row.notification_id == f"digest:{DigestWindow.objects.get().pk}"
    assert set(row.data["digest"]["actors"]) == {f"actor{i}" for i in range(20)}
    # Nothing more comes: the email is sent once, for the digest, and every like says where it went.
    wait_until(lambda: ChannelDelivery.objects.filter(status="sent").exists(), timeout=30, what="the email sent")
    assert list(ChannelDelivery.objects.values_list("notification_id", "channel")) == [(row.notification_id, "email")]
    assert Notification.objects.count() == 1
    assert Delivery.objects.filter(notification_id__in=ids, outcome="digested").count() == 20
    trace = notification_trace(notification_id=ids[7])
    assert trace.status == "digested" and trace.reason.startswith(f"into {row.notification_id} (post:42), closed at")


def test_a_worker_killed_while_the_window_is_open_still_makes_one(stack, service_client):
    worker = stack.start("run_worker")
    ids = [_like(service_client, i, window=15) for i in range(20)]
    wait_until(lambda: Delivery.objects.filter(notification_id__in=ids).exists(), timeout=60, interval=0.01,
               what="the window opened")
    stack.stop(worker, signal.SIGKILL)  # mid-batch, or just after it: the window is open either way
    assert DigestWindow.objects.filter(closed_at__isnull=True).count() == 1
    stack.start("run_worker")

    row = _the_one_digest(20)
    assert Notification.objects.filter(recipient__external_id="owner").count() == 1
    assert not Delivery.objects.values("notification_id").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert DigestWindow.objects.get().closed_at is not None
    assert row.notification_id == DigestWindow.objects.get().notification_id
