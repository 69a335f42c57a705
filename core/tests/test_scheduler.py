"""The scheduler on the real database: due by the movable clock, released once, leases, lanes."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction

from conftest import wait_until
from core import clock, scheduler
from core.models import OutboxEvent, ScheduledItem
from core.scheduler import Item

KIND = "test.kind"


def _item(key: str, *, due_in: float = 0.0, lane: str = "", payload=None) -> Item:
    return Item(kind=KIND, key=key, due_at=clock.now() + timedelta(seconds=due_in), payload=payload or {"k": key}, lane=lane)


@pytest.mark.django_db
def test_a_key_is_scheduled_once():
    assert scheduler.schedule(_item("a"), _item("b")) == 2
    assert scheduler.schedule(_item("a", due_in=60), _item("c")) == 1
    assert set(ScheduledItem.objects.values_list("key", flat=True)) == {"a", "b", "c"}
    assert ScheduledItem.objects.get(key="a").due_at <= clock.now()  # the first scheduling stands


@pytest.mark.django_db
def test_only_due_items_are_released_and_the_moved_clock_reaches_the_query():
    scheduler.schedule(_item("now"), _item("in-an-hour", due_in=3600), Item(kind="other", key="x", due_at=clock.now(), payload={}))
    with transaction.atomic():
        released = scheduler.release(kind=KIND, limit=10)
        assert [d.key for d in released] == ["now"]
        assert scheduler.done(released) == 1
    with clock.moved(hours=1, seconds=1):
        with transaction.atomic():
            later = scheduler.release(kind=KIND, limit=10)
            assert [(d.key, d.payload) for d in later] == [("in-an-hour", {"k": "in-an-hour"})]
            scheduler.done(later)
    assert set(ScheduledItem.objects.values_list("key", flat=True)) == {"x"}


@pytest.mark.django_db(transaction=True)
def test_release_without_a_lease_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        scheduler.release(kind=KIND, limit=1)


@pytest.mark.django_db
def test_oldest_first_and_the_limit_holds():
    scheduler.schedule(*(_item(f"i{n}", due_in=-n) for n in range(5)))
    with transaction.atomic():
        assert [d.key for d in scheduler.release(kind=KIND, limit=2)] == ["i4", "i3"]


@pytest.mark.django_db
def test_an_effect_that_fails_rolls_the_release_back():
    scheduler.schedule(_item("a"))
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        released = scheduler.release(kind=KIND, limit=1)
        OutboxEvent.objects.create(topic="t", key="a", payload=b"x")
        scheduler.done(released)
        1 / 0
    assert not OutboxEvent.objects.exists()
    with transaction.atomic():
        again = scheduler.release(kind=KIND, limit=1)
    assert [d.key for d in again] == ["a"]  # as if never released


@pytest.mark.django_db
def test_a_lease_holds_the_item_until_it_ends_and_a_stale_holder_changes_nothing():
    scheduler.schedule(_item("a"))
    first = scheduler.release(kind=KIND, limit=1, lease=timedelta(seconds=30))
    assert scheduler.release(kind=KIND, limit=1, lease=timedelta(seconds=30)) == []  # held
    with clock.moved(seconds=31):  # the holder died: the lease ran out
        second = scheduler.release(kind=KIND, limit=1, lease=timedelta(seconds=30))
    assert [d.release for d in first + second] == [1, 2]
    assert scheduler.done(first) == 0  # not the first holder's any more
    assert not scheduler.reschedule(first[0], due_at=clock.now())
    assert scheduler.reschedule(second[0], due_at=clock.now() + timedelta(seconds=5))
    with clock.moved(seconds=6):
        third = scheduler.release(kind=KIND, limit=1, lease=timedelta(seconds=30))
    assert scheduler.done(third) == 1
    assert not ScheduledItem.objects.exists()


@pytest.mark.django_db
def test_busy_lanes_are_skipped_and_given_back_items_keep_their_place():
    scheduler.schedule(_item("slow-1", lane="slow.example", due_in=-2), _item("slow-2", lane="slow.example", due_in=-1),
                       _item("fast", lane="fast.example"))
    lease = timedelta(seconds=60)
    assert [d.key for d in scheduler.release(kind=KIND, limit=5, lease=lease, busy_lanes={"slow.example"})] == ["fast"]
    slow = scheduler.release(kind=KIND, limit=5, lease=lease)
    assert [d.key for d in slow] == ["slow-1", "slow-2"]
    assert scheduler.give_back(slow) == 2
    assert [d.key for d in scheduler.release(kind=KIND, limit=1, lease=lease)] == ["slow-1"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_releases_share_the_items_and_none_is_released_twice():
    scheduler.schedule(*(_item(f"i{n}") for n in range(2000)))
    effects: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def releaser():
        try:
            while True:
                with transaction.atomic():
                    released = scheduler.release(kind=KIND, limit=50)
                    if not released:
                        return
                    OutboxEvent.objects.bulk_create([OutboxEvent(topic="t", key=d.key, payload=b"") for d in released])
                    scheduler.done(released)
                with lock:
                    effects.extend(d.key for d in released)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=releaser) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    assert len(effects) == len(set(effects)) == 2000
    assert OutboxEvent.objects.count() == 2000
    assert not ScheduledItem.objects.exists()


@pytest.mark.django_db
def test_with_nothing_due_a_loop_sleeps_until_the_next_item_within_its_bounds():
    assert scheduler.seconds_until_next_due(at_least=0.5, at_most=5.0) == 5.0  # nothing scheduled
    scheduler.schedule(_item("later", due_in=3600))
    assert scheduler.seconds_until_next_due(at_least=0.5, at_most=5.0) == 5.0
    scheduler.schedule(_item("soon", due_in=2))
    assert 1.5 < scheduler.seconds_until_next_due(at_least=0.5, at_most=5.0) <= 2.01
    with clock.moved(seconds=1.9):  # due in 0.1 s: woken for on time, not after the pause for busy items
        assert 0.05 < scheduler.seconds_until_next_due(at_least=0.5, at_most=5.0) <= 0.11
    with clock.moved(seconds=10):  # due already (waiting for a busy lane, say): the shortest pause
        assert scheduler.seconds_until_next_due(at_least=0.5, at_most=5.0) == 0.5


@pytest.mark.django_db(transaction=True)
def test_a_sleeping_due_loop_wakes_when_any_process_schedules_an_item():
    released: list[int] = []
    stop = threading.Event()

    def handler(*, limit: int) -> int:
        with transaction.atomic():
            items = scheduler.release(kind=KIND, limit=limit)
            scheduler.done(items)
        released.append(len(items))
        return len(items)

    loop = scheduler.DueLoop(name="test-loop", handlers=[handler], stop=stop)
    loop.start()
    try:
        wait_until(lambda: len(released) >= 1, what="the first pass")  # nothing; then it sleeps 5 s
        scheduler.schedule(_item("now"))  # committed at once, as by another process
        wait_until(lambda: sum(released) == 1, timeout=3, what="the item released before the 5 s sleep ends")
    finally:
        stop.set()
        loop.join()

