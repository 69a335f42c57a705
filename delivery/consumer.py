"""The consume loop shared by the worker and the dispatcher.

poll a batch -> decode (records that are not ours go to the dead-letter topic) -> handle the whole
batch (one database transaction in the handler) -> commit offset+1 of every partition's last record.
Offsets are committed only after the handler returned, so a process killed anywhere before that
commit sees the batch again, and the handlers are idempotent. SIGTERM/SIGINT set a flag: the batch
in hand is finished and committed, then the consumer leaves its group.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from delivery import broker
from delivery.messages import InvalidPayload

logger = logging.getLogger(__name__)

M = TypeVar("M")

PROGRESS_LOG_SECONDS = 5.0


class StopFlag:
    """Set by SIGTERM/SIGINT (or by a test); the loop checks it between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_args) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)


class Heartbeat:
    """Touches a file at most once a second while the loop is alive (container healthchecks read its age)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._last = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if self.path is not None and now - self._last >= 1.0:
            self.path.touch()
            self._last = now


class BatchConsumer(Generic[M]):
    def __init__(
        self,
        *,
        name: str,
        logical_topics: tuple[str, ...],
        logical_group: str,
        decode: Callable[[bytes | None], M],
        handle_batch: Callable[[list[M]], object],
        max_poll_records: int,
        stop: StopFlag,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.name = name
        self.decode = decode
        self.handle_batch = handle_batch
        self.stop = stop
        self.heartbeat = heartbeat or Heartbeat(None)
        self.consumer = broker.consumer_create(
            logical_topics=logical_topics, logical_group=logical_group, max_poll_records=max_poll_records
        )
        self.dlq_producer = broker.producer_create()
        self.dlq_topic = broker.topic_name(broker.NOTIFICATIONS_DLQ)
        self.records_total = 0
        self.invalid_total = 0

    def run(self) -> None:
        started = last_log = time.monotonic()
        logged_records = 0
        try:
            while not self.stop.is_set():
                self.heartbeat.beat()
                batches = self.consumer.poll(timeout_ms=500)
                if batches:
                    self._process(batches)
                now = time.monotonic()
                if now - last_log >= PROGRESS_LOG_SECONDS and self.records_total != logged_records:
                    rate = (self.records_total - logged_records) / (now - last_log)
                    logger.info(
                        "%s: %d records consumed (%d invalid), %.0f records/s over the last %.0f s",
                        self.name, self.records_total, self.invalid_total, rate, now - last_log,
                    )
                    last_log, logged_records = now, self.records_total
        finally:
            logger.info(
                "%s: stopping after %d records in %.1f s; leaving the group",
                self.name, self.records_total, time.monotonic() - started,
            )
            self.consumer.close(autocommit=False)
            self.dlq_producer.close(timeout=5)

    def _process(self, batches: dict) -> None:
        messages: list[M] = []
        invalid = []
        next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in batches.items():
            for record in records:
                try:
                    messages.append(self.decode(record.value))
                except InvalidPayload as exc:
                    invalid.append((record, str(exc)))
            next_offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)

        if invalid:
            self._dead_letter(invalid)
        if messages:
            self._handle_until_done(messages)
        try:
            self.consumer.commit(next_offsets)
        except CommitFailedError:
            # The group rebalanced under us: another member gets these records and the ledger makes
            # the repeat harmless.
            logger.warning("%s: offset commit refused after a rebalance; the batch will be seen again", self.name)
        self.records_total += sum(len(r) for r in batches.values())
        self.invalid_total += len(invalid)

    def _handle_until_done(self, messages: list[M]) -> None:
        """Database outages are not failures: keep the batch, back off, try again, burn no attempt."""
        delay = 0.5
        while True:
            try:
                self.handle_batch(messages)
                return
            except (OperationalError, InterfaceError) as exc:
                if self.stop.is_set():
                    raise SystemExit(f"{self.name}: stopped while the database was unreachable; the batch is uncommitted")
                logger.warning("%s: database unavailable (%s); retrying in %.1f s", self.name, exc, delay)
                connection.close()
                self.stop.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 15.0)
                close_old_connections()

    def _dead_letter(self, invalid: list) -> None:
        for record, reason in invalid:
            logger.warning(
                "%s: invalid payload at %s[%d]@%d goes to %s: %s",
                self.name, record.topic, record.partition, record.offset, self.dlq_topic, reason,
            )
            headers = [
                ("reason", b"invalid payload"),
                ("error", reason.encode()[:1000]),
                ("original_topic", record.topic.encode()),
                ("original_partition", str(record.partition).encode()),
                ("original_offset", str(record.offset).encode()),
            ]
            value = record.value if record.value is None or len(record.value) <= 1024 * 1024 else record.value[:1024]
            self.dlq_producer.send(self.dlq_topic, key=record.key, value=value, headers=headers)
        try:
            self.dlq_producer.flush(timeout=30)
        except KafkaError as exc:
            raise SystemExit(f"{self.name}: could not publish to {self.dlq_topic} ({exc}); check the broker") from exc
