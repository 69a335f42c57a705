"""The transactional outbox: the API's only way to publish.

`outbox_enqueue` runs inside the caller's transaction, so an event exists exactly when the rows it
speaks of do. `OutboxRelay` publishes pending events in id order and deletes them once the broker has
acknowledged them. A relay killed between the acknowledgement and the delete publishes those events
again on restart; every consumer is idempotent (the ledger, the campaign status), so that repeats
nothing a user can see.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import psycopg
from django.conf import settings
from django.db import connection, transaction

from delivery import broker
from delivery.models import OutboxEvent

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox_event"


def outbox_enqueue(*, topic: str, key: str, payload: bytes, headers: dict[str, str] | None = None) -> OutboxEvent:
    return OutboxEvent.objects.create(topic=topic, key=key, payload=payload, headers=headers or {})


def outbox_enqueue_many(*, events: Iterable[OutboxEvent]) -> None:
    OutboxEvent.objects.bulk_create(events, batch_size=1000)


class OutboxRelay:
    """Moves outbox rows to Kafka. Wakes on PostgreSQL NOTIFY (a trigger on the table), else polls."""

    def __init__(self, *, batch_size: int | None = None, poll_interval: float = 0.2):
        self.producer = broker.producer_create(linger_ms=0)
        self.batch_size = batch_size or settings.RELAY_BATCH_SIZE
        self.poll_interval = poll_interval
        self._listen_conn: psycopg.Connection | None = None

    def publish_pending(self) -> int:
        """Publish one batch of pending events; returns how many. Raises if the broker did not take them."""
        with transaction.atomic():
            events = list(
                OutboxEvent.objects.select_for_update(skip_locked=True).order_by("id")[: self.batch_size]
            )
            if not events:
                return 0
            futures = [
                self.producer.send(
                    broker.topic_name(e.topic),
                    key=e.key.encode(),
                    value=bytes(e.payload),
                    headers=[(name, str(value).encode()) for name, value in e.headers.items()] or None,
                )
                for e in events
            ]
            self.producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)  # raises the broker's error: the transaction rolls back, rows stay
            OutboxEvent.objects.filter(id__in=[e.id for e in events]).delete()
        return len(events)

    def wait_for_events(self, timeout: float) -> None:
        """Block until an insert is notified (PostgreSQL) or the poll interval passes."""
        if connection.vendor != "postgresql":
            time.sleep(min(timeout, self.poll_interval))
            return
        try:
            if self._listen_conn is None or self._listen_conn.closed:
                params = connection.get_connection_params()
                params.pop("cursor_factory", None)
                self._listen_conn = psycopg.connect(**params, autocommit=True)
                self._listen_conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            for _ in self._listen_conn.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error as exc:
            # The database went away under the listener: poll until it is back, then listen again.
            logger.warning("relay: lost the LISTEN connection (%s); polling", str(exc).strip())
            if self._listen_conn is not None:
                self._listen_conn.close()
            self._listen_conn = None
            time.sleep(min(timeout, self.poll_interval))

    def backlog(self) -> int:
        return OutboxEvent.objects.count()

    def producer_reset(self) -> None:
        """After a broker error: an idempotent producer that failed stays failed, so start a new one."""
        self.producer.close(timeout=1)
        self.producer = broker.producer_create(linger_ms=0)

    def close(self) -> None:
        if self._listen_conn is not None:
            self._listen_conn.close()
        self.producer.close(timeout=5)
