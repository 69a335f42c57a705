"""The transactional outbox: the API's only way to publish (`core.relay` moves it to Kafka).

`outbox_enqueue` runs inside the caller's transaction, so an event exists exactly when the rows it
speaks of do. Published events are kept for RELAY_RETENTION_SECONDS with the partition and offset the
broker gave them, so that a broker that lost them (a topic recreated) is sent them again, then purged
(`delivery.retention`, run by the worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta

import orjson
import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.db import Condition, bulk_insert
from core.models import OutboxEvent

# Every statement that inserts outbox rows NOTIFYs this channel (a trigger, core migration 0001); the
# relay LISTENs. SQLite has no NOTIFY: there the relay polls.
NOTIFY_CHANNEL = "outbox_event"

logger = logging.getLogger(__name__)


class OutboxListener:
    """Waits for the NOTIFY of an outbox insert, on a connection of its own (autocommit, LISTEN).

    The relay waits on one to publish at once; an idle consumer (`core.consumer`) waits on one to
    fetch again at once, since nearly every record our topics receive went through the outbox first.
    On SQLite there is no NOTIFY: `wait` sleeps at most `poll_interval` and answers False, and
    `can_wake` is False. A listener that lost its connection (the database went away) polls the same
    way and listens again at the next wait."""

    def __init__(self, *, name: str, poll_interval: float = 0.2, channel: str = NOTIFY_CHANNEL) -> None:
        self.name = name
        self.poll_interval = poll_interval
        self.channel = channel  # another channel than the outbox's: the scheduler's (core.scheduler)
        self._conn: psycopg.Connection | None = None

    @property
    def can_wake(self) -> bool:
        return connection.vendor == "postgresql"

    def wait(self, timeout: float) -> bool:
        """Block until an outbox insert is notified (True) or `timeout` seconds pass (False). Every
        notification that arrived before the call counts, so none is missed between two waits."""
        if not self.can_wake:
            time.sleep(min(timeout, self.poll_interval))
            return False
        try:
            conn = self._connect()
            return any(True for _ in conn.notifies(timeout=max(timeout, 0.0), stop_after=1))
        except psycopg.Error as exc:
            # The database went away under the listener: poll until it is back, then listen again.
            logger.warning("%s: lost the LISTEN connection (%s); polling", self.name, str(exc).strip())
            self.close()
            time.sleep(min(timeout, self.poll_interval))
            return False

    def drain(self) -> None:
        """Forget the notifications received so far (work they announced has been looked at)."""
        if self._conn is None or self._conn.closed:
            return
        try:
            for _ in self._conn.notifies(timeout=0.0):
                pass
        except psycopg.Error:
            self.close()

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            self._conn = psycopg.connect(**params, autocommit=True)
            self._conn.execute(f"LISTEN {self.channel}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def outbox_enqueue(*, topic: str, key: str, payload: bytes, headers: dict[str, str] | None = None,
                   only_if: Condition | None = None) -> bool:
    """One INSERT (the API's accepted notification is this one statement). With `only_if`, the row is
    written only while that condition holds, decided by the same statement: returns whether it was."""
    if connection.vendor != "postgresql":  # SQLite, development: check, then write
        if only_if is not None and not only_if.holds():
            return False
        OutboxEvent.objects.create(topic=topic, key=key, payload=payload, headers=headers or {})
        return True
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    sql = f"INSERT INTO {table} (topic, key, payload, headers, created_at) SELECT %s, %s, %b, %s::jsonb, %s"
    params = [topic, key, payload, orjson.dumps(headers or {}).decode(), timezone.now()]
    if only_if is not None:
        sql += f" WHERE {only_if.sql}"
        params += only_if.params
    connection.ensure_connection()
    # Bound by the server (Django's cursor quotes every value on the client: twice the CPU for this one).
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def outbox_enqueue_many(*, events: Iterable[OutboxEvent]) -> None:
    """One statement for any number of events (bulk_create quotes each value on the client: 60 ms or
    more per 1,000; this binds one array per column)."""
    now = timezone.now()
    bulk_insert(model=OutboxEvent, columns=("topic", "key", "payload", "headers", "created_at"),
                rows=[(e.topic, e.key, bytes(e.payload), e.headers or {}, e.created_at or now) for e in events])


def outbox_enqueue_keyed(*, topic: str, records: Iterable[tuple[str, bytes]]) -> None:
    """Events of one topic from (key, payload) pairs, in one statement (no model instance per event:
    the scheduler's release queues thousands at once)."""
    now = timezone.now()
    bulk_insert(model=OutboxEvent, columns=("topic", "key", "payload", "headers", "created_at"),
                rows=[(topic, key, payload, {}, now) for key, payload in records])


def outbox_republish_recent(*, logical_topics: list[str]) -> int:
    """The broker lost these topics' records: publish again what was published to them within the
    retention window (consumers drop what they had already; the relay publishes in id order, ahead
    of newer events). Returns how many."""
    since = timezone.now() - timedelta(seconds=settings.RELAY_RETENTION_SECONDS)
    return OutboxEvent.objects.filter(topic__in=logical_topics, published_at__gte=since).update(
        published_at=None, published_partition=None, published_offset=None
    )

