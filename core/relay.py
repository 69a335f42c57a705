"""The outbox relay: moves the outbox (`core.outbox`) to Kafka.

`OutboxRelay` publishes pending events in id order and marks them published (with the
partition and offset the broker gave) once the broker has acknowledged them; they are kept for
RELAY_RETENTION_SECONDS, so that a broker that lost them (a topic recreated) is sent them again, then
purged by the worker's retention thread (`delivery.retention`). A relay killed between the
acknowledgement and the mark publishes those events again; every consumer is idempotent (the
ledger, the campaign status), so that repeats nothing a user can see.

The relay runs inside `run_worker` and `run_dispatcher` (a thread each; `run_relay` runs it alone).
Each publish batch holds a transaction-level PostgreSQL advisory lock for the batch and its flush:
one process publishes at a time, so each key's order holds, and when that process dies its
transaction ends, the lock with it, and another process publishes the next batch. (A session-level
lock could be lost silently with its connection while its holder went on publishing.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from kafka import KafkaProducer

from core import broker, metrics
from core.dead_letters import dead_letters_store
from core.failures import (
    RECORD_KAFKA_ERRORS,
    Backoff,
    FailureKind,
    describe,
    failure_kind,
)
from core.messages import DEAD_LETTER_PAYLOAD_BYTES
from core.models import DeadLetter, DeadLetterReason, OutboxEvent
from core.outbox import (
    OutboxListener,
    outbox_enqueue_many,
    outbox_republish_recent,
)

logger = logging.getLogger("delivery.relay")

# pg_try_advisory_xact_lock key of the publishing relay: any constant unique to this purpose.
RELAY_LOCK_KEY = 0x6F7574626F78  # "outbox"


def producer_discard(producer: KafkaProducer | None) -> None:
    """Drop a producer without waiting for it: after a broker lost its state, `close()` can block or
    raise (its flush never completes), so its sender is stopped without sending what it holds, in a
    daemon thread. Whatever it held is still in the outbox (or is redone by its caller)."""
    if producer is None:
        return

    def close() -> None:
        with contextlib.suppress(Exception):
            sender = getattr(producer, "_sender", None)  # kafka-python has no public "abandon" call
            if sender is not None:
                sender.force_close()
            producer.close(timeout=5)

    threading.Thread(target=close, name="producer-discard", daemon=True).start()


class OutboxRelay:
    """Moves outbox rows to Kafka. Wakes on PostgreSQL NOTIFY (a trigger on the table), else polls."""

    def __init__(self, *, batch_size: int | None = None, poll_interval: float = 0.2):
        self.batch_size = batch_size or settings.RELAY_BATCH_SIZE
        self.poll_interval = poll_interval
        self._producer: KafkaProducer | None = None
        self._made_at_losses = 0
        self.listener = OutboxListener(name="relay", poll_interval=poll_interval)

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is not None and self._made_at_losses != broker.broker_losses():
            self.producer_drop()  # made before the broker lost our topics: its metadata is of topics gone
        if self._producer is None:
            self._made_at_losses = broker.broker_losses()
            # One request in flight: a retried request can never overtake the next one (each key's order).
            self._producer = broker.producer_create(linger_ms=0, max_in_flight_requests_per_connection=1)
        return self._producer

    def publish_pending(self) -> int | None:
        """Publish one batch of pending events; returns how many, or None when another process holds
        the publishing lock. Raises if the broker did not take them (the rows stay)."""
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
                    if not cursor.fetchone()[0]:
                        return None
            events = list(OutboxEvent.objects.pending().order_by("id")[: self.batch_size])
            if not events:
                return 0
            refused: list[tuple[OutboxEvent, Exception]] = []
            futures = []
            for e in events:
                try:
                    futures.append((e, self.producer.send(
                        broker.topic_name(e.topic),
                        key=e.key.encode(),
                        value=bytes(e.payload),
                        headers=[(name, str(value).encode()) for name, value in e.headers.items()] or None,
                    )))
                except RECORD_KAFKA_ERRORS as exc:
                    refused.append((e, exc))
            self.producer.flush(timeout=30)
            acknowledged = []
            for e, future in futures:
                try:
                    metadata = future.get(timeout=0)  # the broker's error: the transaction rolls back, rows stay
                except RECORD_KAFKA_ERRORS as exc:
                    refused.append((e, exc))  # about this record only: it must not hold up the others
                else:
                    acknowledged.append((e.id, metadata.partition, metadata.offset))
            if refused:
                _refused_set_aside(refused)
                OutboxEvent.objects.filter(id__in=[e.id for e, _ in refused]).delete()
            _mark_published(acknowledged)
        return len(events)

    def wait_for_events(self, timeout: float) -> None:
        """Block until an insert is notified (PostgreSQL) or the timeout passes (the poll interval on SQLite)."""
        self.listener.wait(timeout)

    def backlog(self) -> int:
        return OutboxEvent.objects.pending().count()

    def oldest_pending(self) -> int | None:
        return OutboxEvent.objects.pending().order_by("id").values_list("id", flat=True).first()

    def producer_drop(self) -> None:
        """After a broker error: an idempotent producer that failed stays failed (an unknown producer
        id, a fenced epoch), so drop it without waiting; the next batch makes a new one."""
        producer, self._producer = self._producer, None
        producer_discard(producer)

    def close(self) -> None:
        self.listener.close()
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # noqa: BLE001 - shutting down: a producer that cannot finish is dropped
                producer_discard(self._producer)


def _mark_published(acknowledged: list[tuple[int, int, int]]) -> None:
    """Keep what the broker acknowledged, with where it put it, for the retention window."""
    if not acknowledged:
        return
    now = timezone.now()
    if connection.vendor == "postgresql":
        ids, partitions, offsets = (list(column) for column in zip(*acknowledged))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {OutboxEvent._meta.db_table} AS e SET published_at = %s, published_partition = a.p, "
                "published_offset = a.o FROM unnest(%s::bigint[], %s::int[], %s::bigint[]) AS a(id, p, o) WHERE e.id = a.id",
                [now, ids, partitions, offsets],
            )
        return
    for event_id, partition, offset in acknowledged:
        OutboxEvent.objects.filter(id=event_id).update(published_at=now, published_partition=partition,
                                                       published_offset=offset)


def _refused_set_aside(refused: list[tuple[OutboxEvent, Exception]]) -> None:
    """Events the broker refuses for what they are (too large for it): a dead letter each, so that
    one event never stops the outbox. Their dead-letter records carry a truncated payload."""
    letters = [
        DeadLetter(reason=DeadLetterReason.PROCESSING_FAILED, error=f"the broker refused the record: {describe(exc)}",
                   recipient_external_id=event.key, original_topic=broker.topic_name(event.topic),
                   payload=bytes(event.payload)[:DEAD_LETTER_PAYLOAD_BYTES])
        for event, exc in refused
    ]
    events: list[OutboxEvent] = []
    dead_letters_store(letters, events)
    outbox_enqueue_many(events=events)
    for letter in letters:
        logger.error("relay: %s on %s set aside as a dead letter", letter.error, letter.original_topic)


PRE_PUBLISH_CHECK_SECONDS = 1.0


def _recover_lost_topics(lost: list[str], on_topics_lost: Callable[[list[str]], object] | None) -> None:
    """The broker lost records it had acknowledged: publish the retained events of those topics again,
    then let the process's own recovery run (the dispatcher's: dispatch again the campaigns whose
    tasks may have been lost with them)."""
    republished = outbox_republish_recent(logical_topics=lost)
    logger.warning("relay: the broker lost %s (recreated or missing); publishing %d retained events again",
                   ", ".join(lost), republished)
    if on_topics_lost is not None:
        on_topics_lost(lost)


def relay_run(*, stop, heartbeat=None, idle_wait: float = 1.0,
              on_topics_lost: Callable[[list[str]], object] | None = None) -> int:
    """Publish the outbox until `stop` is set; returns how many events this process published.

    Several processes run this; the one that last won the publishing lock leads: it publishes as soon
    as an event is notified. The others follow: once a second they look at the oldest pending event,
    and only when the same one is still waiting a second later (the leader died or stalled) do they
    try the lock, and the first to get it leads from then on. Outages are waited out with backoff
    (the events stay in the outbox); after a broker error the producer is dropped and the topics are
    checked, so a broker that came back empty is published to again without a restart.
    `on_topics_lost(logical topics)` runs after the retained events of lost topics were queued again.
    """
    relay = OutboxRelay()
    published = logged = 0
    last_log = last_backlog = time.monotonic()
    backoff = Backoff()
    leading = True  # until a race for the lock is lost
    oldest_seen: int | None = None
    watch = broker.TopicWatch(logical_topics=broker.ALL_TOPICS, interval=settings.RELAY_LOSS_CHECK_SECONDS,
                              remember=True)
    logger.info("relay: publishing the outbox to %s", ", ".join(broker.topic_name(t) for t in broker.ALL_TOPICS))
    try:
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat()
            try:
                if leading:
                    relay.wait_for_events(timeout=idle_wait)
                else:
                    stop.wait(idle_wait)
                    oldest, oldest_seen = oldest_seen, relay.oldest_pending()
                    if oldest_seen is None or oldest_seen != oldest:
                        continue  # the leader is keeping up
                    watch.check_soon()  # about to publish in the leader's place
                # Before publishing (within a second of the last look when there is something to publish):
                # a broker that lost our topics gets the retained events first, so that they go out ahead
                # of newer ones (the relay publishes in id order).
                if lost := watch.lost_topics(max_age=PRE_PUBLISH_CHECK_SECONDS if relay.oldest_pending() else None):
                    _recover_lost_topics(lost, on_topics_lost)
                while not stop.is_set():
                    count = relay.publish_pending()
                    if count is None:
                        if leading:
                            logger.info("relay: another process publishes the outbox; following")
                        leading = False
                        break
                    if not leading:
                        logger.info("relay: this process publishes the outbox now (the leader stopped)")
                        leading, oldest_seen = True, None
                    if not count:
                        break
                    published += count
                    metrics.OUTBOX_PUBLISHED.inc(count)
                backoff.reset()
                if time.monotonic() - last_backlog >= 5:
                    metrics.OUTBOX_BACKLOG.set(relay.backlog())
                    last_backlog = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive every error; each is logged
                kind = failure_kind(exc)
                delay = backoff.next()
                logger.warning("relay: %s (%s); retrying in %.1f s (nothing is lost: events stay in the outbox)",
                               describe(exc), kind.value, delay)
                with contextlib.suppress(Exception):
                    connection.close()
                if kind is FailureKind.OUTAGE:
                    relay.producer_drop()
                    watch.check_soon()  # the broker may come back empty: look before publishing again
                stop.wait(delay)
                close_old_connections()
            if time.monotonic() - last_log >= 5 and published != logged:
                logger.info("relay: %d events published (%d in the last %.0f s)",
                            published, published - logged, time.monotonic() - last_log)
                last_log, logged = time.monotonic(), published
    finally:
        relay.close()
        watch.close()
        with contextlib.suppress(Exception):
            connection.close()
        logger.info("relay: stopped after publishing %d events", published)
    return published
