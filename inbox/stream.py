"""The live inbox: Server-Sent Events of every notification delivered to a recipient.

One `InboxBroadcaster` per server process holds the open streams. It wakes when the worker commits
inbox rows (PostgreSQL NOTIFY from a statement trigger; on SQLite it polls), reads the new rows of
every recipient with an open stream in one query, and hands each to its streams. Each stream has
its own cursor, the row id, which is also the SSE event id: a client reconnecting with
Last-Event-ID gets every row after it, then the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import orjson
import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Max, Q

from inbox.models import Notification
from inbox.serializers import NotificationOutput

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "inbox_notification"
FETCH_LIMIT = 1000
POLL_SECONDS = 0.25  # SQLite, and a safety net on PostgreSQL


@dataclass(eq=False)
class Subscription:
    recipient_pk: int
    cursor: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


def _rows_after(floors: dict[int, int]) -> list[dict]:
    """New rows of each recipient after its own floor (the lowest cursor of its streams), oldest first."""
    close_old_connections()
    after_floors = Q()
    for recipient_pk, floor in floors.items():
        after_floors |= Q(recipient_id=recipient_pk, id__gt=floor)
    notifications = Notification.objects.filter(after_floors).order_by("id")[:FETCH_LIMIT]
    return [{"pk": n.id, "recipient_pk": n.recipient_id, "data": NotificationOutput(n).data} for n in notifications]


def _newest_id(recipient_pk: int) -> int:
    close_old_connections()
    return Notification.objects.filter(recipient_id=recipient_pk).aggregate(top=Max("id"))["top"] or 0


class InboxBroadcaster:
    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._fetch_loop())]
        if connection.vendor == "postgresql":
            self.tasks.append(asyncio.create_task(self._listen_loop()))

    async def subscribe(self, *, recipient_pk: int, last_event_id: int | None) -> Subscription:
        cursor = last_event_id if last_event_id is not None else await sync_to_async(_newest_id)(recipient_pk)
        subscription = Subscription(recipient_pk=recipient_pk, cursor=cursor)
        self.subscriptions.add(subscription)
        self.wake.set()  # deliver what was missed since Last-Event-ID at once
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    async def _listen_loop(self) -> None:
        params = await sync_to_async(connection.get_connection_params)()
        params.pop("cursor_factory", None)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.wake.set()  # anything committed while we were not listening
                    async for _ in listener.notifies():
                        self.wake.set()
            except (psycopg.OperationalError, OSError) as exc:
                logger.warning("stream: lost the database listener (%s); reconnecting in 1 s", exc)
                await asyncio.sleep(1)

    async def _fetch_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=POLL_SECONDS)
            self.wake.clear()
            if not self.subscriptions:
                continue
            try:
                await self._fetch_and_dispatch()
            except Exception:  # a database hiccup must not end every stream of the process
                logger.exception("stream: fetching new notifications failed; retrying")
                await asyncio.sleep(1)

    async def _fetch_and_dispatch(self) -> None:
        while self.subscriptions:
            subscriptions = list(self.subscriptions)
            floors: dict[int, int] = {}
            for subscription in subscriptions:
                floors[subscription.recipient_pk] = min(subscription.cursor, floors.get(subscription.recipient_pk, subscription.cursor))
            rows = await sync_to_async(_rows_after)(floors)
            for row in rows:
                for subscription in subscriptions:
                    if subscription.recipient_pk == row["recipient_pk"] and subscription.cursor < row["pk"]:
                        subscription.queue.put_nowait(row)
                        subscription.cursor = row["pk"]
            if len(rows) < FETCH_LIMIT:
                return


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


async def sse_events(*, recipient_pk: int, last_event_id: int | None):
    """The body of a stream: the missed and live notifications, and a heartbeat comment every
    SSE_HEARTBEAT_SECONDS while nothing happens."""
    subscription = await broadcaster().subscribe(recipient_pk=recipient_pk, last_event_id=last_event_id)
    try:
        yield b"retry: 3000\n\n"
        while True:
            try:
                row = await asyncio.wait_for(subscription.queue.get(), timeout=settings.SSE_HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                yield b": heartbeat\n\n"
                continue
            yield sse_event(row)
    finally:
        broadcaster().unsubscribe(subscription)
