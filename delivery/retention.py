"""Retention: what the pipeline keeps only for a while, purged by a thread of `run_worker` (no cron)
and by `manage.py purge` (once, for operators).

- Idempotency-Keys older than 24 hours (`core.idempotency.KEY_LIFETIME`: a repeat after that is a
  new request anyway).
- Published outbox events older than RELAY_RETENTION_SECONDS: they are kept that long on purpose, so
  that a broker that lost acknowledged records is sent them again (`core.outbox`). Events not yet
  published are never purged.
- Channel deliveries `sent` more than RETENTION_CHANNEL_DELIVERY_DAYS ago (rows still pending,
  retrying, dead or skipped stay: a dead one is what its dead letter replays).
- Dead letters discarded more than RETENTION_DEAD_LETTER_DAYS ago (`dead` ones stay until an operator
  replays or discards them).
- Digest windows closed more than RETENTION_CHANNEL_DELIVERY_DAYS ago, their events first (the digest
  notification keeps what it says; the events only served the trace's "into digest:<n>").
- Frequency caps' events (delivery/caps.py) older than the longest cap's window, which no cap counts
  any more, and the guard rows of (recipient, channel) not used since. A guard row deleted while a
  worker locks it is harmless: the worker's `INSERT ... ON CONFLICT` then inserts it again (and holds
  it), or the delete waits for the worker's commit.

The delivery ledger (`Delivery`) is not purged: it must hold each notification id at least as long as
a replay can bring that notification back, and a dead letter can be replayed for as long as it exists
(the tasks it carries, and a broker that lost records, can deliver an id again at any time).

How: each kind is deleted in bounded batches (`core.db.delete_batch`: one short statement of at most
RETENTION_PURGE_BATCH_SIZE rows, so no lock is held long), until a batch comes back short or the
run's time budget is spent (the rest waits for the next run). One process purges at a time: a
PostgreSQL session advisory lock, tried, never waited for (on SQLite, one machine, it just runs).
Losing that lock with its connection only lets two processes delete the same rows: harmless.

Where: a thread of its own in `run_worker`, with its own database connection, waking every
RETENTION_PURGE_INTERVAL_SECONDS. Not between the worker's batches: a purge of a large backlog takes
seconds, and the poll loop must never wait for it (in-app delivery, and `max_poll_interval_ms`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef
from django.utils import timezone

from core.consumer import StopFlag
from core.db import delete_batch
from core.failures import describe
from core.idempotency import KEY_LIFETIME
from core.models import DeadLetter, DeadLetterStatus, IdempotencyKey, OutboxEvent
from delivery.caps import cap_window_longest
from delivery.models import CapEvent, CapGuard, ChannelDelivery, ChannelDeliveryStatus, DigestEvent, DigestWindow

logger = logging.getLogger(__name__)

# pg_try_advisory_lock key of the purge: any constant unique to this purpose (the relay's differs).
PURGE_LOCK_KEY = 0x7075726765  # "purge"
# A run stops starting new batches after this long; the next run goes on where it stopped.
PURGE_TIME_BUDGET_SECONDS = 30.0
RETENTION_JOIN_SECONDS = 5.0


@dataclass
class PurgeResult:
    locked_out: bool = False  # another process was purging: nothing done
    deleted: dict[str, int] = field(default_factory=dict)  # kind -> rows deleted
    complete: bool = True  # False: the time budget ran out (or stop was set) with rows left

    def summary(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in self.deleted.items())


def _purgeable(now: datetime) -> dict[str, object]:
    """What each kind keeps no longer, as of `now` (a clock the tests move)."""
    digests_kept = timedelta(days=settings.RETENTION_CHANNEL_DELIVERY_DAYS)
    # What no cap counts any more: older than the longest cap's window (everything, without caps).
    caps_counted_since = now - timedelta(seconds=cap_window_longest())
    return {
        "idempotency keys": IdempotencyKey.objects.filter(created_at__lt=now - KEY_LIFETIME),
        "outbox events": OutboxEvent.objects.filter(
            published_at__lt=now - timedelta(seconds=settings.RELAY_RETENTION_SECONDS)),
        "channel deliveries": ChannelDelivery.objects.filter(
            status=ChannelDeliveryStatus.SENT,
            updated_at__lt=now - timedelta(days=settings.RETENTION_CHANNEL_DELIVERY_DAYS)),
        "digest events": DigestEvent.objects.filter(window__closed_at__lt=now - digests_kept),
        "digest windows": DigestWindow.objects.filter(closed_at__lt=now - digests_kept).exclude(
            Exists(DigestEvent.objects.filter(window=OuterRef("pk")))),
        "cap events": CapEvent.objects.filter(at__lt=caps_counted_since),
        "cap guards": CapGuard.objects.filter(used_at__lt=caps_counted_since),
        "dead letters": DeadLetter.objects.filter(
            status=DeadLetterStatus.DISCARDED,
            resolved_at__lt=now - timedelta(days=settings.RETENTION_DEAD_LETTER_DAYS)),
    }


@contextlib.contextmanager
def _purge_lock():
    """True when this process may purge (PostgreSQL: it got the advisory lock; elsewhere always)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PURGE_LOCK_KEY])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            # A connection lost meanwhile took the lock with it; its error is the one worth raising.
            with contextlib.suppress(Exception), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK_KEY])


def retention_purge(*, now: datetime | None = None, batch_size: int | None = None,
                    time_budget: float = PURGE_TIME_BUDGET_SECONDS, stop: StopFlag | None = None) -> PurgeResult:
    """Delete what is past its retention, in batches of `batch_size` rows (RETENTION_PURGE_BATCH_SIZE),
    for at most about `time_budget` seconds; see the module's docstring. Logs what it deleted."""
    now = now or timezone.now()
    batch_size = batch_size or settings.RETENTION_PURGE_BATCH_SIZE
    result = PurgeResult()
    deadline = time.monotonic() + time_budget
    with _purge_lock() as got:
        if not got:
            result.locked_out = True
            logger.info("retention: another process is purging; nothing done")
            return result
        for kind, queryset in _purgeable(now).items():
            deleted = 0
            while True:
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    result.complete = False
                    break
                count = delete_batch(queryset, limit=batch_size)
                deleted += count
                if count < batch_size:
                    break
            result.deleted[kind] = deleted
            if not result.complete:
                break
    if any(result.deleted.values()):
        logger.info("retention: purged %s%s", result.summary(),
                    "" if result.complete else " (time budget spent; the rest at the next run)")
    return result


def retention_run(*, stop: StopFlag, interval: float | None = None) -> None:
    """Purge now and then every `interval` seconds (RETENTION_PURGE_INTERVAL_SECONDS) until `stop`
    is set. An error is logged and the next run tries again: nothing here can stop the worker."""
    interval = interval or settings.RETENTION_PURGE_INTERVAL_SECONDS
    try:
        while not stop.is_set():
            try:
                retention_purge(stop=stop)
            except Exception as exc:  # noqa: BLE001 - the purge must outlive every error; each is logged
                logger.warning("retention: purge failed (%s); trying again in %.0f s", describe(exc), interval)
            with contextlib.suppress(Exception):
                connection.close()  # no idle connection held between runs minutes apart
            stop.wait(interval)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def retention_start(*, stop: StopFlag) -> threading.Thread:
    thread = threading.Thread(target=retention_run, kwargs={"stop": stop}, name="retention", daemon=True)
    thread.start()
    return thread


def retention_stop(thread: threading.Thread | None) -> None:
    if thread is not None:
        thread.join(timeout=RETENTION_JOIN_SECONDS)
