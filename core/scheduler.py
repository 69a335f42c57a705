"""One durable scheduler for work that waits: items in PostgreSQL, due at a time, released once.

An item is (kind, key, due_at, lane, payload). `schedule` adds it (a key already scheduled is left as it
is, so scheduling is idempotent); `release` claims the due items of a kind, oldest first, with
`FOR UPDATE SKIP LOCKED`, so that any number of processes share the work and none waits for
another's rows. What releasing does is the caller's:

- **Inside one transaction** (the item's effect is a database write, for instance a task put in the
  outbox): call `release` and `done` in the same `transaction.atomic()` as the effect. A process
  killed anywhere rolls all of it back and the item is released again at once: the effect happens
  exactly once.
- **With a lease** (the effect is outside the database: an HTTP request): `release(lease=...)`
  commits the claim by moving the item's `due_at` to the end of the lease. The holder then calls
  `done` (finished) or `reschedule` (try again later) with what `release` returned; a holder killed
  in between leaves the item to come due again when its lease ends. `done` and `reschedule` only
  touch an item still held under that same release, so a holder whose lease ran out changes
  nothing another holder has since claimed.

Time comes from `core.clock` and reaches the SQL as a parameter: tests move it.

Why a table of our own rather than Procrastinate (README, "How it works"): the release must commit
in the same transaction as its effect (exactly once, not at least once), SQLite must keep working
for development, and the whole mechanism is three statements on one indexed table.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from core import clock
from core.db import bulk_insert, fetch_bound
from core.failures import Backoff, describe
from core.models import ScheduledItem
from core.outbox import OutboxListener

logger = logging.getLogger(__name__)

# `schedule` NOTIFYs this channel (at commit); a DueLoop LISTENs, so it can sleep until the next due item.
NOTIFY_CHANNEL = "scheduled_item"


@dataclass(frozen=True, slots=True)
class Due:
    """A released item. `release` identifies this release (see `done`)."""

    id: int
    kind: str
    key: str
    due_at: datetime
    lane: str
    payload: dict
    release: int


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    key: str
    due_at: datetime
    payload: dict
    lane: str = ""


def schedule(*items: Item) -> int:
    """Schedule items; a key already scheduled is left as it is. Returns how many were added.
    Joins the caller's transaction, so an item exists exactly when what scheduled it committed, and
    the loops that sleep until the next due item (DueLoop) are told then (NOTIFY, sent at commit)."""
    now = clock.now()
    inserted = bulk_insert(
        model=ScheduledItem,
        columns=("kind", "key", "due_at", "lane", "payload", "releases", "created_at"),
        rows=[(item.kind, item.key, item.due_at, item.lane, item.payload, 0, now) for item in items],
        ignore_conflicts_on="key",
        returning="id",
    )
    if inserted and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return len(inserted)


def seconds_until_next_due(*, at_least: float, at_most: float) -> float:
    """How long a loop with nothing to release may sleep: until the earliest item (of any kind, leased
    ones included: a lease that runs out is due again), `at_most` at most. An item due already that
    the loop did not take (another process holds it, or its lane is busy) is looked at again after
    `at_least`; one due later is woken for on time (a loop that woke a moment early, or an item due in
    0.2 s, must not wait `at_least` more: 10,000 held notifications are due within 2 s of their time)."""
    earliest = ScheduledItem.objects.order_by("due_at").values_list("due_at", flat=True).first()
    if earliest is None:
        return at_most
    ahead = (earliest - clock.now()).total_seconds()
    return at_least if ahead <= 0 else min(ahead + 0.001, at_most)


def release(*, kind: str, limit: int, lease: timedelta | None = None, busy_lanes: Iterable[str] = ()) -> list[Due]:
    """Claim up to `limit` items of `kind` due by the clock's now, oldest first, skipping items
    another transaction holds and items of `busy_lanes`. Without `lease` it must run inside the
    caller's transaction (the rows stay locked until it ends); with one, the claim commits here and
    lasts `lease`."""
    if lease is None and not transaction.get_connection().in_atomic_block:
        raise RuntimeError("release() without a lease must run inside the transaction of its effect")
    now = clock.now()
    with transaction.atomic():
        rows = list(
            ScheduledItem.objects.select_for_update(skip_locked=True)
            .filter(kind=kind, due_at__lte=now)
            .exclude(lane__in=list(busy_lanes))
            .order_by("due_at", "id")  # ties in the order they were scheduled
            .values_list("id", "key", "due_at", "lane", "payload", "releases")[:limit]
        )
        if rows and lease is not None:  # (within the effect's transaction the row lock is the claim)
            ScheduledItem.objects.filter(id__in=[row[0] for row in rows]).update(
                releases=F("releases") + 1, due_at=now + lease)
    bump = 1 if lease is not None else 0
    return [Due(id=pk, kind=kind, key=key, due_at=due_at, lane=lane, payload=payload, release=releases + bump)
            for pk, key, due_at, lane, payload, releases in rows]


def take(*, kind: str, limit: int) -> list[Due]:
    """`release` and `done` in one statement, inside the transaction of the items' effect: claim up to
    `limit` due items of `kind` (oldest first, skipping items another transaction holds) and remove
    them. A process killed before its commit rolls both back, and the items are due again at once."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("take() must run inside the transaction of its effect")
    if connection.vendor != "postgresql":
        items = release(kind=kind, limit=limit)
        done(items)
        return items
    table = connection.ops.quote_name(ScheduledItem._meta.db_table)
    rows = fetch_bound(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE kind = %s AND due_at <= %s "
        "ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, key, due_at, lane, payload, releases",
        [kind, clock.now(), limit])
    rows.sort(key=lambda row: (row[2], row[0]))  # (RETURNING keeps no order) ties in the order scheduled
    return [Due(id=pk, kind=kind, key=key, due_at=due_at, lane=lane,
                payload=payload if isinstance(payload, dict) else orjson.loads(payload), release=releases)
            for pk, key, due_at, lane, payload, releases in rows]


def done(items: Iterable[Due]) -> int:
    """Remove released items; returns how many. An item released again since (its lease ran out and
    another holder claimed it) is not this holder's any more and is left alone."""
    removed = 0
    for release_count, ids in _by_release(list(items)).items():
        removed += ScheduledItem.objects.filter(id__in=ids, releases=release_count).delete()[0]
    return removed


def reschedule(item: Due, *, due_at: datetime, payload: dict | None = None) -> bool:
    """Make a released item due again at `due_at` (a retry); False if it is no longer this holder's."""
    changes: dict = {"due_at": due_at}
    if payload is not None:
        changes["payload"] = payload
    return bool(ScheduledItem.objects.filter(id=item.id, releases=item.release).update(**changes))


def give_back(items: Iterable[Due]) -> int:
    """Released items this holder will not run now (their lane is busy): due again as they were, so
    they keep their place in line. Returns how many were still this holder's."""
    given = 0
    for item in items:
        given += reschedule(item, due_at=item.due_at)
    return given


def cancel(*, kind: str, lane: str) -> int:
    """Remove the items of `kind` in `lane` that are not released yet (a recipient erased: its held
    notifications). An item being released meanwhile is locked and finishes first. Returns how many."""
    return ScheduledItem.objects.filter(kind=kind, lane=lane).delete()[0]


def _by_release(items: Sequence[Due]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for item in items:
        grouped.setdefault(item.release, []).append(item.id)
    return grouped


class DueLoop:
    """A thread that releases due items through `handlers`: each takes `limit=` and releases up to
    that many items of its kind inside one transaction with their effects, returning how many. A
    handler that returns a full batch is called again at once; otherwise the loop sleeps until the
    next item is due (at least SCHEDULER_POLL_SECONDS, at most SCHEDULER_IDLE_SECONDS), woken at once
    when any process schedules an item (NOTIFY). A failure (an outage) is logged and tried again with
    backoff."""

    BATCH = 2000

    def __init__(self, *, name: str, handlers: Sequence[Callable[..., int]], stop) -> None:
        self.name = name
        self.handlers = handlers
        self.stop = stop
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.listener = OutboxListener(name=name, channel=NOTIFY_CHANNEL, poll_interval=settings.SCHEDULER_POLL_SECONDS)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def _sleep(self) -> None:
        """Until the next due item or a NOTIFY of a new one; in slices of a second, so a stop is quick."""
        self.listener.drain()  # items scheduled before this point were looked at by the pass just made
        try:
            seconds = seconds_until_next_due(at_least=settings.SCHEDULER_POLL_SECONDS,
                                             at_most=settings.SCHEDULER_IDLE_SECONDS)
        except Exception:  # noqa: BLE001 - the database is away: the next pass says so, with backoff
            seconds = settings.SCHEDULER_POLL_SECONDS
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if self.listener.wait(min(remaining, 1.0)):
                return

    def _run(self) -> None:
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                try:
                    busy = False
                    for handler in self.handlers:
                        released = handler(limit=self.BATCH)
                        busy |= released >= self.BATCH
                        if released:
                            logger.info("%s: %d due items released by %s", self.name, released, handler.__name__)
                except Exception as exc:  # noqa: BLE001 - an outage (or a bug): say so, wait, try again
                    delay = backoff.next()
                    logger.warning("%s: releasing due items failed (%s); trying again in %.1f s", self.name,
                                   describe(exc), delay)
                    with contextlib.suppress(Exception):
                        connection.close()
                    self.stop.wait(delay)
                    continue
                backoff = Backoff()
                if not busy:
                    self._sleep()
        finally:
            self.listener.close()
            connection.close()
