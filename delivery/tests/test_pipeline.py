"""API -> outbox -> relay -> Kafka -> worker -> inbox, with real processes, broker and database."""

import uuid

import pytest
from django.utils import timezone

from conftest import wait_until
from core import broker
from core.messages import NotificationTask
from core.models import OutboxEvent
from core.testing import group_committed, records_produce, topic_read
from delivery.models import Delivery, DeliveryOutcome
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

SEED_CURLS = [
    {"fromID": "2", "toID": "1", "message": "Tito started following you."},
    {"fromID": "1", "toID": "2", "message": "Micho mentioned you in a comment: 'Great seeing you yesterday, @Tito!'"},
    {"fromID": "4", "toID": "1", "message": "Negro liked your post: 'My weekend getaway!'"},
]


def _task(recipient: str, message: str = "hello", notification_id: str | None = None) -> NotificationTask:
    return NotificationTask(
        notification_id=notification_id or str(uuid.uuid4()),
        recipient=recipient,
        kind="like",
        sender="someone",
        message=message,
        created_at=timezone.now().isoformat(),
    )


def _inbox_messages(client, recipient: str) -> list[str]:
    return [n["message"] for n in client.get(f"/notifications/{recipient}").json()["results"]]


def test_seed_curls_reach_the_inbox_through_the_real_pipeline(stack, service_client):
    stack.start("run_relay")
    stack.start("run_worker")

    for body in SEED_CURLS:
        assert service_client.post("/send", body).status_code == 202

    wait_until(lambda: len(_inbox_messages(service_client, "1")) == 2, what="user 1's two notifications")
    assert _inbox_messages(service_client, "1") == [SEED_CURLS[2]["message"], SEED_CURLS[0]["message"]]
    wait_until(lambda: _inbox_messages(service_client, "2") == [SEED_CURLS[1]["message"]], what="user 2's notification")
    # Unknown recipients were created on first use; the outbox is drained; the ledger has all three.
    assert set(Recipient.objects.values_list("external_id", flat=True)) == {"1", "2"}
    assert not OutboxEvent.objects.pending().exists()
    assert Delivery.objects.filter(outcome=DeliveryOutcome.DELIVERED).count() == 3


def test_the_same_task_twice_leaves_one_inbox_row(stack):
    stack.start("run_worker")
    task = _task("7", "once")
    sentinel = _task("7", "sentinel")  # same key, same partition: consumed after both copies

    records_produce(("7", task.encode()), ("7", task.encode()), ("7", sentinel.encode()))

    wait_until(lambda: Notification.objects.filter(notification_id=sentinel.notification_id).exists(), what="sentinel")
    assert Notification.objects.filter(notification_id=task.notification_id).count() == 1
    assert Notification.objects.filter(recipient__external_id="7").count() == 2


def test_a_restarted_worker_does_not_deliver_again(stack):
    worker = stack.start("run_worker")
    task = _task("8", "before restart")
    records_produce(("8", task.encode()))
    wait_until(lambda: Notification.objects.filter(notification_id=task.notification_id).exists(), what="first delivery")
    assert stack.stop(worker) == 0

    sentinel = _task("8", "after restart")
    records_produce(("8", task.encode()), ("8", sentinel.encode()))
    stack.start("run_worker")

    wait_until(lambda: Notification.objects.filter(notification_id=sentinel.notification_id).exists(), what="sentinel")
    assert list(Notification.objects.filter(recipient__external_id="8").order_by("id").values_list("message", flat=True)) == [
        "before restart",
        "after restart",
    ]


def test_a_worker_of_a_new_group_replaying_the_topic_delivers_nothing_twice(stack):
    stack.start("run_worker")
    tasks = [_task(str(100 + i % 5), f"m{i}") for i in range(50)]
    records_produce(*((t.recipient, t.encode()) for t in tasks))
    wait_until(lambda: Notification.objects.count() == 50, what="50 deliveries")
    stack.stop_all()

    # A second worker whose group has no committed offsets reads the whole topic again.
    stack.start("run_worker", "--group", "replay-workers")
    sentinel = _task("100", "sentinel")
    records_produce(("100", sentinel.encode()))

    wait_until(lambda: Notification.objects.filter(notification_id=sentinel.notification_id).exists(), what="sentinel")
    assert Notification.objects.count() == 51
    assert Delivery.objects.count() == 51


def test_bad_input_puts_no_record_on_the_topic(stack, service_client):
    from inbox.tests.test_api import BAD_INPUTS, VALID

    stack.start("run_relay")
    for change, _field in BAD_INPUTS:
        assert service_client.post("/api/v1/notifications/", {**VALID, **change}, format="json").status_code == 400
    sentinel = service_client.post("/api/v1/notifications/", VALID, format="json").json()["id"]

    records = topic_read(broker.NOTIFICATIONS_SEND, until=lambda seen: any(
        NotificationTask.decode(r.value).notification_id == sentinel for r in seen))
    seen = [NotificationTask.decode(r.value) for r in records]
    assert [t.notification_id for t in seen] == [sentinel]


def test_sigterm_finishes_and_commits_the_batch_in_hand(stack):
    worker = stack.start("run_worker", "--batch-size", "100")
    tasks = [_task(str(i % 7), f"m{i}") for i in range(3000)]
    records_produce(*((t.recipient, t.encode()) for t in tasks))
    wait_until(lambda: Notification.objects.exists(), what="the first deliveries")

    assert stack.stop(worker) == 0
    delivered_at_stop = Notification.objects.count()
    committed = group_committed(broker.WORKER_GROUP)
    # Every record whose row was written was committed, and nothing beyond: the batch in hand was
    # finished and its offsets committed before the process left the group.
    assert 0 < delivered_at_stop == sum(meta.offset for meta in committed.values())

    stack.start("run_worker")
    wait_until(lambda: Notification.objects.count() == 3000, what="all 3000 deliveries")
    assert Delivery.objects.count() == 3000
