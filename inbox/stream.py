"""The live inbox: Server-Sent Events of every notification delivered to a recipient.

One `InboxBroadcaster` per server process holds the open streams. It wakes when the worker commits
inbox rows (PostgreSQL NOTIFY from a statement trigger; on SQLite it polls), reads the new rows of
every recipient with an open stream in one query, and hands each to its streams. Each stream has
its own cursor, the row id, which is also the SSE event id: a client reconnecting with
Last-Event-ID gets every row after it, then the live ones.

Database connections: the broadcaster has two per process (LISTEN, and one for its queries on a
thread of its own), whatever the number of streams. A waiting stream holds none.

Bounds: SSE_MAX_STREAMS_PER_RECIPIENT and SSE_MAX_STREAMS_PER_PROCESS. Beyond either, the oldest
stream of that recipient (or, when the process is full and it has none, of the process) is closed with an
`event: close` and a longer `retry:`, after which its EventSource reconnects: no client is
refused for good, and several tabs of one user keep working.

Read state: a change (read, unread, seen, archive, unarchive, read-all) is sent to every open
stream of the recipient as `event: state`, with the recipient's unread count. SQLite has no NOTIFY:
there each poll compares the unread counts of the recipients with open streams with the last ones
sent, and a count that changed goes out as `{"action": "sync", "unread_count": n}`.

Revocation: a stream opened with a recipient token closes when the recipient's tokens are revoked
or the recipient is deleted (NOTIFY from inbox.services; every few seconds the broadcaster also
checks the generations of the tokens its streams were opened with, which is all SQLite has).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
import psycopg
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q

from inbox.models import (
    NEW_NOTIFICATION_CHANNEL,
    STATE_CHANNEL,
    STREAMS_RECHECK_CHANNEL,
    Notification,
    Recipient,
)
from inbox.serializers import NotificationOutput

logger = logging.getLogger(__name__)

FETCH_LIMIT = 1000
POLL_SECONDS = 0.25  # SQLite, and a safety net on PostgreSQL
TOKEN_RECHECK_SECONDS = 5.0  # revoked tokens when a NOTIFY was missed (and on SQLite)
RETRY_MS = 3000
EVICTED_RETRY_MS = (10_000, 20_000)  # a closed-for-room stream comes back later, spread out


@dataclass(frozen=True)
class Closed:
    """The last item of a stream's queue: why the server ends it (replaced, busy, revoked, deleted)."""

    reason: str


@dataclass(frozen=True)
class State:
    """A read-state change of the recipient's inbox, with its unread count after it."""

    data: dict


@dataclass(eq=False)
class Subscription:
    recipient_pk: int
    cursor: int
    token_generation: int | None  # the recipient token's; None when opened by a service or staff
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


def newest_notification_id(recipient_pk: int) -> int:
    return Notification.objects.filter(recipient_id=recipient_pk).aggregate(top=Max("id"))["top"] or 0


def _rows_after(floors: dict[int, int]) -> list[dict]:
    """New rows of each recipient after its own floor (the lowest cursor of its streams), oldest first."""
    after_floors = Q()
    for recipient_pk, floor in floors.items():
        after_floors |= Q(recipient_id=recipient_pk, id__gt=floor)
    notifications = Notification.objects.filter(after_floors).order_by("id")[:FETCH_LIMIT]
    return [{"pk": n.id, "recipient_pk": n.recipient_id, "data": NotificationOutput(n).data} for n in notifications]


def _unread_counts(recipient_pks: set[int]) -> dict[int, int]:
    unread = Notification.objects.filter(recipient_id__in=recipient_pks).unread()
    return dict(unread.values("recipient_id").annotate(n=Count("id")).values_list("recipient_id", "n"))


def _token_generations(recipient_pks: set[int]) -> dict[int, int]:
    return dict(Recipient.objects.filter(pk__in=recipient_pks).values_list("pk", "token_generation"))


def _on_own_connection(function, *args):
    """Runs on the broadcaster's thread, whose connection stays open from call to call (one per
    process). After an error it is closed, and the next call reconnects."""
    try:
        return function(*args)
    except Exception:
        connection.close()
        raise


class InboxBroadcaster:
    def __init__(self) -> None:
        self.by_recipient: dict[int, list[Subscription]] = {}  # each recipient's streams, oldest first
        self.opened: dict[Subscription, None] = {}  # every stream of the process, oldest first
        self.to_recheck: set[int] = set()  # recipients whose streams' tokens are checked again
        self.state_changes: list[dict] = []  # read-state changes to push, oldest first
        self.polled_counts: dict[int, int] = {}  # SQLite: the unread count each recipient's streams last got
        self.wake = asyncio.Event()
        self.database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-stream-db")
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        # A context of its own: the broadcaster outlives the request that happened to start it.
        loop, context = asyncio.get_running_loop(), contextvars.Context()
        self.tasks = [loop.create_task(self._fetch_loop(), context=context)]
        if connection.vendor == "postgresql":
            self.tasks.append(loop.create_task(self._listen_loop(), context=context))

    def subscribe(self, *, recipient_pk: int, cursor: int, token_generation: int | None) -> Subscription:
        own = self.by_recipient.get(recipient_pk, ())
        if len(own) >= settings.SSE_MAX_STREAMS_PER_RECIPIENT:
            self._close(own[0], "replaced")
        elif len(self.opened) >= settings.SSE_MAX_STREAMS_PER_PROCESS:
            # The process is full: this recipient's oldest stream makes room, else the process's oldest.
            if own:
                self._close(own[0], "replaced")
            else:
                self._close(next(iter(self.opened)), "busy")
        subscription = Subscription(recipient_pk=recipient_pk, cursor=cursor, token_generation=token_generation)
        self.by_recipient.setdefault(recipient_pk, []).append(subscription)
        self.opened[subscription] = None
        self.wake.set()  # deliver what was missed since Last-Event-ID at once
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription not in self.opened:
            return  # closed by the server already
        del self.opened[subscription]
        streams = self.by_recipient[subscription.recipient_pk]
        streams.remove(subscription)
        if not streams:
            del self.by_recipient[subscription.recipient_pk]

    def _close(self, subscription: Subscription, reason: str) -> None:
        self.unsubscribe(subscription)
        subscription.queue.put_nowait(Closed(reason))

    async def _db(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.database, _on_own_connection, function, *args)

    async def _listen_loop(self) -> None:
        params = await self._db(connection.get_connection_params)
        params.pop("cursor_factory", None)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {NEW_NOTIFICATION_CHANNEL}")
                    await listener.execute(f"LISTEN {STREAMS_RECHECK_CHANNEL}")
                    await listener.execute(f"LISTEN {STATE_CHANNEL}")
                    self.to_recheck.update(self.by_recipient)  # anything committed while we were not listening
                    self.wake.set()
                    async for notify in listener.notifies():
                        if notify.channel == STREAMS_RECHECK_CHANNEL and notify.payload.isdecimal():
                            self.to_recheck.add(int(notify.payload))
                        elif notify.channel == STATE_CHANNEL:
                            self._state_changed(notify.payload)
                        self.wake.set()
            except (psycopg.OperationalError, OSError) as exc:
                logger.warning("stream: lost the database listener (%s); reconnecting in 1 s", exc)
                await asyncio.sleep(1)

    def _state_changed(self, payload: str) -> None:
        try:
            change = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(change, dict) and change.get("recipient_pk") in self.by_recipient:
            self.state_changes.append(change)

    async def _fetch_loop(self) -> None:
        next_recheck = time.monotonic() + TOKEN_RECHECK_SECONDS
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=POLL_SECONDS)
            self.wake.clear()
            if time.monotonic() >= next_recheck:
                self.to_recheck.update(self.by_recipient)
                next_recheck = time.monotonic() + TOKEN_RECHECK_SECONDS
            try:
                if self.to_recheck:
                    await self._recheck_tokens()
                if self.opened:
                    await self._fetch_and_dispatch()
                if self.state_changes:
                    await self._dispatch_state_changes()
                if self.opened and connection.vendor != "postgresql":
                    await self._dispatch_polled_counts()
            except Exception:  # a database hiccup must not end every stream of the process
                logger.exception("stream: reading the database failed; retrying")
                await asyncio.sleep(1)

    async def _recheck_tokens(self) -> None:
        """Close the streams whose recipient is gone, or whose token's generation was revoked."""
        recipient_pks = self.to_recheck & self.by_recipient.keys()
        self.to_recheck.clear()
        if not recipient_pks:
            return
        try:
            generations = await self._db(_token_generations, recipient_pks)
        except Exception:
            self.to_recheck |= recipient_pks
            raise
        for recipient_pk in recipient_pks:
            for subscription in list(self.by_recipient.get(recipient_pk, ())):
                if recipient_pk not in generations:
                    self._close(subscription, "deleted")
                elif subscription.token_generation not in (None, generations[recipient_pk]):
                    self._close(subscription, "revoked")

    async def _fetch_and_dispatch(self) -> None:
        while self.opened:
            streams = {pk: list(subscriptions) for pk, subscriptions in self.by_recipient.items()}
            floors = {pk: min(s.cursor for s in subscriptions) for pk, subscriptions in streams.items()}
            rows = await self._db(_rows_after, floors)
            for row in rows:
                for subscription in streams.get(row["recipient_pk"], ()):
                    if subscription.cursor < row["pk"]:
                        subscription.queue.put_nowait(row)
                        subscription.cursor = row["pk"]
            if len(rows) < FETCH_LIMIT:
                return

    async def _dispatch_state_changes(self) -> None:
        """After the new notifications: each change, with the recipient's unread count now (one
        query for all of them), so that every open tab shows the same count."""
        changes, self.state_changes = self.state_changes, []
        try:
            counts = await self._db(_unread_counts, {change["recipient_pk"] for change in changes})
        except Exception:
            self.state_changes[:0] = changes
            raise
        for change in changes:
            data = {key: value for key, value in change.items() if key != "recipient_pk"}
            state = State({**data, "unread_count": counts.get(change["recipient_pk"], 0)})
            for subscription in self.by_recipient.get(change["recipient_pk"], ()):
                subscription.queue.put_nowait(state)


    async def _dispatch_polled_counts(self) -> None:
        """SQLite: a `sync` state event for each recipient whose unread count changed since the last poll,
        and for a recipient seen for the first time (a change made just before cannot be missed)."""
        recipient_pks = set(self.by_recipient)
        self.polled_counts = {pk: n for pk, n in self.polled_counts.items() if pk in recipient_pks}
        counts = await self._db(_unread_counts, recipient_pks)
        for recipient_pk in recipient_pks:
            count = counts.get(recipient_pk, 0)
            known = self.polled_counts.get(recipient_pk)
            self.polled_counts[recipient_pk] = count
            if known != count:
                state = State({"action": "sync", "unread_count": count})
                for subscription in self.by_recipient.get(recipient_pk, ()):
                    subscription.queue.put_nowait(state)


_broadcasters: dict[int, InboxBroadcaster] = {}


def broadcaster() -> InboxBroadcaster:
    """The broadcaster of the running event loop (one per server process)."""
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _broadcasters:
        _broadcasters[loop_id] = InboxBroadcaster()
        _broadcasters[loop_id].start()
    return _broadcasters[loop_id]


def sse_event(row: dict) -> bytes:
    return b"id: %d\nevent: notification\ndata: %s\n\n" % (row["pk"], orjson.dumps(row["data"]))


def sse_close(closed: Closed) -> bytes:
    """The last message of a stream the server ends. After `replaced` or `busy` its EventSource
    comes back later; after `revoked` or `deleted` it comes back to a 401 and stops."""
    retry = random.randint(*EVICTED_RETRY_MS) if closed.reason in {"replaced", "busy"} else RETRY_MS
    return b"retry: %d\nevent: close\ndata: %s\n\n" % (retry, orjson.dumps({"reason": closed.reason}))


async def sse_events(*, recipient_pk: int, cursor: int, token_generation: int | None):
    """The body of a stream: the notifications after `cursor`, then the live ones, and a heartbeat
    comment every SSE_HEARTBEAT_SECONDS while nothing happens."""
    hub = broadcaster()
    subscription = hub.subscribe(recipient_pk=recipient_pk, cursor=cursor, token_generation=token_generation)
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        while True:
            try:
                item = await asyncio.wait_for(subscription.queue.get(), timeout=settings.SSE_HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if isinstance(item, Closed):
                yield sse_close(item)
                return
            if isinstance(item, State):
                yield b"event: state\ndata: %s\n\n" % orjson.dumps(item.data)  # no id: Last-Event-ID stays
                continue
            yield sse_event(item)
    finally:
        hub.unsubscribe(subscription)
