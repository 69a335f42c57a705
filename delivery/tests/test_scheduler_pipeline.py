"""The scheduler with real workers: 10,000 notifications held until the same second are all released
within 2 s of it, each once, though one of the two workers is SIGKILLed during the release."""

import signal
from datetime import timedelta

import pytest
from django.db.models import Count

from conftest import wait_until
from core import clock, scheduler, topics
from core.messages import NotificationTask
from core.models import OutboxEvent, ScheduledItem
from inbox import services
from inbox.models import Notification

pytestmark = pytest.mark.pipeline

HELD = 10_000


def _queued() -> list[str]:
    return [NotificationTask.decode(bytes(p)).notification_id
            for p in OutboxEvent.objects.filter(topic=topics.SEND.logical).values_list("payload", flat=True)]


def test_ten_thousand_due_in_the_same_second_are_released_once_though_a_worker_is_killed(stack):
    workers = [stack.start("run_worker") for _ in range(2)]
    wait_until(lambda: all("scheduler" in stack.log_of(w) or "consuming" in stack.log_of(w) for w in workers),
               what="both workers running")
    due = clock.now() + timedelta(seconds=5)
    tasks = [NotificationTask(notification_id=f"held-{i}", recipient=f"u{i % 500}", kind="like", sender="s",
                              message=f"m{i}", created_at=clock.now().isoformat()) for i in range(HELD)]
    scheduler.schedule(*(services.held_item(task, send_at=due) for task in tasks))  # as the API holds each
    ids = {task.notification_id for task in tasks}
    assert ScheduledItem.objects.filter(kind=services.RELEASE).count() == HELD and not _queued()

    wait_until(lambda: OutboxEvent.objects.filter(topic=topics.SEND.logical).exists(), timeout=30,
               interval=0.01, what="the release begun")
    stack.stop(workers[0], signal.SIGKILL)  # during the release (or just after it: each is one transaction)
    # (A count: decoding 10,000 payloads at each poll would take a core from the workers it measures.)
    queued_events = OutboxEvent.objects.filter(topic=topics.SEND.logical)
    wait_until(lambda: queued_events.count() >= HELD, timeout=max(0.5, (due - clock.now()).total_seconds() + 2),
               interval=0.1, what="every held notification released within 2 s of its time")
    print(f"scheduler: {HELD} due at the same second released {(clock.now() - due).total_seconds():.2f} s after it")
    queued = _queued()
    assert len(queued) == len(set(queued)) == HELD and set(queued) == ids  # each once
    assert not ScheduledItem.objects.filter(kind=services.RELEASE).exists()

    rows = Notification.objects.filter(notification_id__in=ids)
    wait_until(lambda: rows.count() == HELD, timeout=120, what="all delivered by the surviving worker")
    assert not rows.values("notification_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert workers[1].poll() is None
