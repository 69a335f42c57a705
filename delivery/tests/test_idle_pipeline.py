"""Idle consumers (core/consumer.py): a worker that stopped fetching continuously still delivers what
the outbox announces, what another producer writes straight to the topic, and the partitions of a
member that died while both were idle (real processes, broker and PostgreSQL)."""

import signal
import uuid

import pytest
from django.utils import timezone

from conftest import wait_until
from core import broker
from core.messages import NotificationTask
from inbox.models import Notification

pytestmark = pytest.mark.pipeline

# Idle soon, so that the tests need not wait long for it; the check keeps its default (1 s).
IDLE_SOON = {"CONSUMER_IDLE_AFTER_SECONDS": "0.5"}


def _idle(stack, process) -> bool:
    return "worker: idle after" in stack.log_of(process)


def _produce_straight(tasks: list[tuple[int, NotificationTask]]) -> None:
    """Records written to the topic by another producer: no outbox row, so no NOTIFY."""
    producer = broker.producer_create()
    for partition, task in tasks:
        producer.send(broker.topic_name(broker.NOTIFICATIONS_SEND), key=task.recipient.encode(), value=task.encode(),
                      partition=partition)
    producer.flush(timeout=30)
    producer.close()


def _task(recipient: str) -> NotificationTask:
    return NotificationTask(notification_id=str(uuid.uuid4()), recipient=recipient, kind="like", sender="s",
                            message="while idle", created_at=timezone.now().isoformat())


def test_an_idle_worker_delivers_a_notification_posted_after_it_went_idle(stack, service_client):
    worker = stack.start("run_worker", env=IDLE_SOON)
    assert service_client.post("/send", {"fromID": "1", "toID": "2", "message": "first"}).status_code == 202
    wait_until(lambda: Notification.objects.filter(message="first").exists(), timeout=60, what="the first notification")
    wait_until(lambda: _idle(stack, worker), timeout=30, what="the worker idle")

    assert service_client.post("/send", {"fromID": "1", "toID": "2", "message": "after idle"}).status_code == 202

    wait_until(lambda: Notification.objects.filter(message="after idle").exists(), timeout=15,
               what="the notification posted while the worker was idle")
    assert worker.poll() is None


def test_an_idle_worker_reads_records_another_producer_wrote_straight_to_the_topic(stack, kafka):
    worker = stack.start("run_worker", env=IDLE_SOON)
    wait_until(lambda: "assigned" in stack.log_of(worker), timeout=60, what="the worker in its group")
    wait_until(lambda: _idle(stack, worker), timeout=30, what="the worker idle")

    tasks = [(partition, _task(f"foreign{partition}")) for partition in range(kafka.KAFKA_PARTITIONS)]
    _produce_straight(tasks)

    ids = [task.notification_id for _, task in tasks]
    wait_until(lambda: Notification.objects.filter(notification_id__in=ids).count() == len(ids), timeout=30,
               what="every record of the other producer delivered")
    assert worker.poll() is None


def test_the_survivor_of_two_idle_workers_takes_over_the_dead_ones_partitions_and_delivers_all(stack, kafka):
    """The regression: an idle member given new partitions by a rebalance must read them (a prototype
    livelocked here: its short idle check never outlasted a new partition's first fetch)."""
    workers = [stack.start("run_worker", env=IDLE_SOON) for _ in range(2)]
    partitions = 2 * kafka.KAFKA_PARTITIONS  # notifications.send and notifications.retry
    wait_until(lambda: all(f"assigned {partitions // 2} partitions" in stack.log_of(w) for w in workers), timeout=90,
               what="both workers sharing the partitions")
    wait_until(lambda: all(_idle(stack, w) for w in workers), timeout=30, what="both workers idle")

    dead, survivor = workers
    stack.stop(dead, signal.SIGKILL)  # no chance to leave the group: its partitions move after the session
    tasks = [(partition, _task(f"orphan{partition}")) for partition in range(kafka.KAFKA_PARTITIONS)]
    _produce_straight(tasks)  # every partition, the dead member's too; no outbox, so no NOTIFY either

    ids = [task.notification_id for _, task in tasks]
    wait_until(lambda: Notification.objects.filter(notification_id__in=ids).count() == len(ids), timeout=120,
               what="every partition's record delivered by the survivor")
    assert f"assigned {partitions} partitions" in stack.log_of(survivor)
    assert survivor.poll() is None
