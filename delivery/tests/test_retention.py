"""The retention purge (delivery.retention): each kind's cutoff, bounded batches, one purger at a time."""

import io
import threading
from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conftest import wait_until
from core.consumer import StopFlag
from core.models import DeadLetter, DeadLetterStatus, IdempotencyKey, OutboxEvent
from delivery.models import ChannelDelivery, ChannelDeliveryStatus, Delivery, DigestEvent, DigestWindow
from delivery.retention import PURGE_LOCK_KEY, retention_purge, retention_run

NOW = timezone.now()


def _key(name: str, age: timedelta) -> IdempotencyKey:
    user = get_user_model().objects.get_or_create(username="svc")[0]
    return IdempotencyKey.objects.create(scoped_key=f"{user.pk}:{name}", user=user, request_fingerprint="f",
                                         created_at=NOW - age)


def _event(name: str, *, published_age: timedelta | None) -> OutboxEvent:
    published = None if published_age is None else NOW - published_age
    return OutboxEvent.objects.create(topic="notifications.send", key=name, payload=b"{}", created_at=NOW - timedelta(days=30),
                                      published_at=published)


def _window(key: str, *, closed_age: timedelta | None, events: int, opened_age: timedelta = timedelta(days=8)):
    window = DigestWindow.objects.create(recipient_external_id="r", key=key, kind="like", opened_at=NOW - opened_age,
                                         closes_at=NOW - opened_age, closed_at=None if closed_age is None else NOW - closed_age)
    for i in range(events):
        DigestEvent.objects.create(window=window, notification_id=f"{key}-{i}", sender="s", created_at=NOW - opened_age)


def _channel(name: str, status: str, age: timedelta) -> ChannelDelivery:
    return ChannelDelivery.objects.create(notification_id=name, channel="webhook", recipient_external_id="r",
                                          status=status, updated_at=NOW - age)


def _letter(name: str, status: str, resolved_age: timedelta | None) -> DeadLetter:
    return DeadLetter.objects.create(reason="permanent failure", notification_id=name, original_topic="t", payload=b"",
                                     status=status, created_at=NOW - timedelta(days=400),
                                     resolved_at=None if resolved_age is None else NOW - resolved_age)


@pytest.fixture
def retention(settings):
    settings.RELAY_RETENTION_SECONDS = 900
    settings.RETENTION_CHANNEL_DELIVERY_DAYS = 7
    settings.RETENTION_DEAD_LETTER_DAYS = 30
    settings.RETENTION_PURGE_BATCH_SIZE = 1000
    return settings


def test_each_kind_is_purged_past_its_cutoff_and_kept_before_it(db, retention):
    second = timedelta(seconds=1)
    _key("old", timedelta(hours=24) + second), _key("new", timedelta(hours=24) - second)
    _event("old", published_age=timedelta(seconds=900) + second)
    _event("new", published_age=timedelta(seconds=900) - second)
    _event("pending", published_age=None)  # never published: never purged, however old
    _channel("old-sent", ChannelDeliveryStatus.SENT, timedelta(days=7) + second)
    _channel("new-sent", ChannelDeliveryStatus.SENT, timedelta(days=7) - second)
    for status in (ChannelDeliveryStatus.DEAD, ChannelDeliveryStatus.RETRYING, ChannelDeliveryStatus.PENDING,
                   ChannelDeliveryStatus.SKIPPED):
        _channel(f"old-{status}", status, timedelta(days=70))
    _letter("old-discarded", DeadLetterStatus.DISCARDED, timedelta(days=30) + second)
    _letter("new-discarded", DeadLetterStatus.DISCARDED, timedelta(days=30) - second)
    _letter("old-dead", DeadLetterStatus.DEAD, None)
    _letter("old-replayed", DeadLetterStatus.REPLAYED, timedelta(days=300))
    Delivery.objects.create(notification_id="ledger", recipient_external_id="r", outcome="delivered",
                            settled_at=NOW - timedelta(days=3650))
    _window("old-closed", closed_age=timedelta(days=7) + second, events=2)
    _window("new-closed", closed_age=timedelta(days=7) - second, events=1)
    _window("open", closed_age=None, events=1, opened_age=timedelta(days=70))

    result = retention_purge(now=NOW)

    assert not result.locked_out and result.complete
    assert result.deleted == {"idempotency keys": 1, "outbox events": 1, "channel deliveries": 1, "digest events": 2,
                              "digest windows": 1, "cap events": 0, "cap guards": 0, "dead letters": 1}
    assert set(DigestWindow.objects.values_list("key", flat=True)) == {"new-closed", "open"}
    assert DigestEvent.objects.count() == 2
    assert set(IdempotencyKey.objects.values_list("scoped_key", flat=True)) == {f"{get_user_model().objects.get().pk}:new"}
    assert set(OutboxEvent.objects.values_list("key", flat=True)) == {"new", "pending"}
    assert set(ChannelDelivery.objects.values_list("notification_id", flat=True)) == {
        "new-sent", "old-dead", "old-retrying", "old-pending", "old-skipped"}
    assert set(DeadLetter.objects.values_list("notification_id", flat=True)) == {"new-discarded", "old-dead", "old-replayed"}
    assert Delivery.objects.filter(notification_id="ledger").exists()  # the ledger is never purged
    assert retention_purge(now=NOW).deleted == dict.fromkeys(result.deleted, 0)


def test_the_settings_move_the_cutoffs(db, retention):
    retention.RETENTION_CHANNEL_DELIVERY_DAYS = 1
    retention.RELAY_RETENTION_SECONDS = 60
    _channel("two-days", ChannelDeliveryStatus.SENT, timedelta(days=2))
    _event("two-minutes", published_age=timedelta(minutes=2))

    assert retention_purge(now=NOW).deleted["channel deliveries"] == 1
    assert not ChannelDelivery.objects.exists() and not OutboxEvent.objects.exists()


def test_rows_go_in_bounded_batches_of_one_statement_each(db, retention):
    old = timedelta(days=8)
    ChannelDelivery.objects.bulk_create([
        ChannelDelivery(notification_id=f"n{i}", channel="webhook", recipient_external_id="r",
                        status=ChannelDeliveryStatus.SENT, updated_at=NOW - old) for i in range(25)])

    with CaptureQueriesContext(connection) as queries:
        result = retention_purge(now=NOW, batch_size=10)

    assert result.deleted["channel deliveries"] == 25 and not ChannelDelivery.objects.exists()
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    channel_deletes = [sql for sql in deletes if "delivery_channeldelivery" in sql.split(" WHERE ")[0]]
    assert len(channel_deletes) == 3  # 10, 10, then 5 (short: done)
    assert all(" IN (SELECT " in sql and "LIMIT 10" in sql for sql in deletes)


def test_a_spent_time_budget_stops_between_batches_and_the_next_run_goes_on(db, retention):
    _channel("old", ChannelDeliveryStatus.SENT, timedelta(days=8))

    stopped = retention_purge(now=NOW, time_budget=0)
    assert not stopped.complete and not any(stopped.deleted.values())
    assert ChannelDelivery.objects.exists()

    assert retention_purge(now=NOW).deleted["channel deliveries"] == 1


def test_one_process_purges_at_a_time(db, retention):
    _key("old", timedelta(days=2))
    other = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [PURGE_LOCK_KEY]).fetchone()[0]
        result = retention_purge(now=NOW)
        assert result.locked_out and result.deleted == {}
        assert IdempotencyKey.objects.exists()

        other.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK_KEY])
        assert retention_purge(now=NOW).deleted["idempotency keys"] == 1
    finally:
        other.close()
    # The purge released its lock: another session can take it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s), pg_advisory_unlock(%s)", [PURGE_LOCK_KEY, PURGE_LOCK_KEY])
        assert cursor.fetchone() == (True, True)


def test_the_command_runs_the_same_purge_once(db, retention):
    _key("old", timedelta(days=2))
    _letter("old", DeadLetterStatus.DISCARDED, timedelta(days=31))
    out = io.StringIO()

    call_command("purge", stdout=out)

    assert "1 idempotency keys" in out.getvalue() and "1 dead letters" in out.getvalue()
    assert not IdempotencyKey.objects.exists() and not DeadLetter.objects.exists()


def test_the_worker_thread_purges_until_stopped(transactional_db, retention):
    _channel("old", ChannelDeliveryStatus.SENT, timedelta(days=8))
    stop = StopFlag()
    thread = threading.Thread(target=retention_run, kwargs={"stop": stop, "interval": 0.1})
    thread.start()
    try:
        wait_until(lambda: not ChannelDelivery.objects.exists(), what="the purge thread's first run")
        _channel("older", ChannelDeliveryStatus.SENT, timedelta(days=9))
        wait_until(lambda: not ChannelDelivery.objects.exists(), what="its next run")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_failed_purge_is_logged_and_the_next_run_goes_on(monkeypatch, caplog):
    stop, calls = StopFlag(), []

    def purge(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("database gone")
        stop.set()

    monkeypatch.setattr("delivery.retention.retention_purge", purge)
    retention_run(stop=stop, interval=0.01)

    assert len(calls) == 2
    assert "retention: purge failed (RuntimeError: database gone)" in caplog.text
