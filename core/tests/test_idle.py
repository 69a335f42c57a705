"""The idle state of the consume loop (pure), and the outbox listener it waits on (real PostgreSQL)."""

import select
import threading

import pytest
from django.db import connection

from core.consumer import Activity
from core.outbox import OutboxListener, outbox_enqueue


def test_a_consumer_goes_idle_once_after_the_quiet_time():
    activity = Activity(idle_after=2.0, can_idle=True, now=100.0)

    assert not activity.quiet(in_group=True, now=101.9)
    assert activity.quiet(in_group=True, now=102.0)
    assert activity.idle
    assert not activity.quiet(in_group=True, now=110.0)  # already idle: said once


def test_records_a_notify_or_an_assignment_make_it_active_and_restart_the_quiet_time():
    activity = Activity(idle_after=2.0, can_idle=True, now=0.0)
    assert activity.quiet(in_group=True, now=5.0)

    assert activity.woke(now=6.0) is True  # it was idle
    assert not activity.idle
    assert activity.woke(now=6.5) is False  # already active
    assert not activity.quiet(in_group=True, now=8.4)
    assert activity.quiet(in_group=True, now=8.5)


def test_records_while_active_push_the_idle_time_back():
    activity = Activity(idle_after=2.0, can_idle=True, now=0.0)
    for now in (1.0, 2.5, 4.0):
        activity.woke(now=now)
        assert not activity.quiet(in_group=True, now=now + 1.9)
    assert activity.quiet(in_group=True, now=6.0)


def test_a_consumer_outside_its_group_or_rejoining_it_never_goes_idle():
    activity = Activity(idle_after=2.0, can_idle=True, now=0.0)

    assert not activity.quiet(in_group=False, now=1_000.0)  # joining takes polls at full pace
    assert activity.quiet(in_group=True, now=1_000.0)


def test_without_a_wake_up_a_consumer_never_goes_idle():
    activity = Activity(idle_after=2.0, can_idle=False, now=0.0)

    assert not activity.quiet(in_group=True, now=1_000.0)
    assert not activity.idle


@pytest.mark.django_db(transaction=True)
def test_the_listener_wakes_on_an_outbox_insert_and_forgets_what_it_drained():
    listener = OutboxListener(name="test")
    try:
        assert listener.can_wake is (connection.vendor == "postgresql")
        assert listener.wait(0.05) is False  # listening from now on
        outbox_enqueue(topic="notifications.send", key="k", payload=b"{}")
        assert listener.wait(10.0) is True

        outbox_enqueue(topic="notifications.send", key="k", payload=b"{}")
        # Its NOTIFY has reached the listener's connection (awaited on the socket, not slept for):
        # drained, it is forgotten.
        readable, _, _ = select.select([listener._conn.fileno()], [], [], 10.0)
        assert readable
        listener.drain()
        assert listener.wait(0.1) is False

        def insert_later():
            try:
                outbox_enqueue(topic="notifications.send", key="k", payload=b"{}")
            finally:
                connection.close()  # this thread's own

        timer = threading.Timer(0.2, insert_later)
        timer.start()
        assert listener.wait(10.0) is True  # woken while waiting
        timer.join()
    finally:
        listener.close()
