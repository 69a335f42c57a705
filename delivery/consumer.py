"""The consume loop shared by the worker and the dispatcher.

poll a batch -> decode (records that are not ours go to `handle_invalid`: dead letters) -> handle
the whole batch (one database transaction in the handler) -> commit offset+1 of each partition's
last handled record. Offsets are committed only after the handlers returned, so a process killed
anywhere before that commit sees the batch again, and the handlers are idempotent.

A record whose `due_at` is in the future (a retry) pauses its partition at that record until it is
due, without holding up any other partition. SIGTERM/SIGINT set a flag: the batch in hand is
finished and committed, then the consumer leaves its group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from delivery import broker, metrics
from delivery.messages import Envelope, InvalidPayload, InvalidRecord, Origin
from delivery.models import ConsumerHeartbeat

logger = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 5.0
STATUS_SECONDS = 2.0


class StopFlag:
    """Set by SIGTERM/SIGINT (or by the failure guard); the loop checks it between batches."""

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


class BatchConsumer:
    def __init__(
        self,
        *,
        name: str,
        decoders: dict[str, Callable[[bytes | None], Any]],
        logical_group: str,
        handle_batch: Callable[[list[Envelope]], object],
        handle_invalid: Callable[[list[InvalidRecord]], object],
        max_poll_records: int,
        stop: StopFlag,
        heartbeat: Heartbeat | None = None,
        due_at: Callable[[Any], float | None] = lambda message: None,
    ) -> None:
        self.name = name
        self.decoders = {broker.topic_name(logical): decode for logical, decode in decoders.items()}
        self.handle_batch = handle_batch
        self.handle_invalid = handle_invalid
        self.due_at = due_at
        self.stop = stop
        self.heartbeat = heartbeat or Heartbeat(None)
        self.consumer = broker.consumer_create(
            logical_topics=tuple(decoders), logical_group=logical_group, max_poll_records=max_poll_records
        )
        self.paused_until: dict[TopicPartition, float] = {}
        self.records_total = 0
        self.invalid_total = 0
        self.group = broker.group_name(logical_group)
        self.process_name = f"{name}@{socket.gethostname()}:{os.getpid()}"
        self._last_status = 0.0

    def run(self) -> None:
        started = last_log = time.monotonic()
        logged_records = 0
        try:
            while not self.stop.is_set():
                self.heartbeat.beat()
                self._resume_due_partitions()
                batches = self.consumer.poll(timeout_ms=200 if self.paused_until else 500)
                if batches:
                    self._process(batches)
                self._report_status()
                now = time.monotonic()
                if now - last_log >= PROGRESS_LOG_SECONDS and self.records_total != logged_records:
                    logger.info(
                        "%s: %d records handled (%d invalid), %.0f records/s over the last %.0f s",
                        self.name, self.records_total, self.invalid_total,
                        (self.records_total - logged_records) / (now - last_log), now - last_log,
                    )
                    last_log, logged_records = now, self.records_total
        finally:
            logger.info(
                "%s: stopping after %d records in %.1f s; leaving the group",
                self.name, self.records_total, time.monotonic() - started,
            )
            self.consumer.close(autocommit=False)
            with contextlib.suppress(DatabaseError):
                ConsumerHeartbeat.objects.filter(process=self.process_name).delete()

    def _report_status(self) -> None:
        """Lag per partition (high watermark from fetches, never ListOffsets) to metrics and, every
        few seconds, this process's heartbeat row for `manage.py status`."""
        if time.monotonic() - self._last_status < STATUS_SECONDS:
            return
        self._last_status = time.monotonic()
        lag = {}
        try:
            for tp in self.consumer.assignment():
                highwater, position = self.consumer.highwater(tp), self.consumer.position(tp, timeout_ms=100)
                if highwater is not None and position is not None:
                    lag[f"{tp.topic}[{tp.partition}]"] = max(highwater - position, 0)
                    metrics.CONSUMER_LAG.labels(self.name, tp.topic, tp.partition).set(max(highwater - position, 0))
        except KafkaError:
            pass
        with contextlib.suppress(DatabaseError):  # an outage shows up elsewhere; status is best effort
            ConsumerHeartbeat.objects.update_or_create(
                process=self.process_name,
                defaults={"group": self.group, "last_poll_at": timezone.now(), "records_total": self.records_total, "lag": lag},
            )

    def _resume_due_partitions(self) -> None:
        now = time.time()
        due = [tp for tp, until in self.paused_until.items() if until <= now]
        assigned = self.consumer.assignment()
        for tp in due:
            del self.paused_until[tp]
            if tp in assigned:
                self.consumer.resume(tp)

    def _process(self, batches: dict) -> None:
        envelopes: list[Envelope] = []
        invalid: list[InvalidRecord] = []
        next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        now = time.time()
        for tp, records in batches.items():
            decode = self.decoders[tp.topic]
            for record in records:
                origin = Origin(record.topic, record.partition, record.offset)
                try:
                    message = decode(record.value)
                except InvalidPayload as exc:
                    invalid.append(InvalidRecord(origin, record.key, record.value, str(exc)))
                else:
                    due = self.due_at(message)
                    if due is not None and due > now:
                        # Not yet: read this record again when it is due; the partition waits, others go on.
                        self.consumer.seek(tp, record.offset)
                        self.consumer.pause(tp)
                        self.paused_until[tp] = due
                        break
                    envelopes.append(Envelope(message, origin))
                next_offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)

        started = time.perf_counter()
        if invalid:
            self._until_done(self.handle_invalid, invalid)
            metrics.RECORDS_INVALID.labels(self.name).inc(len(invalid))
        if envelopes:
            self._until_done(self.handle_batch, envelopes)
        metrics.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self.name).observe(len(envelopes) + len(invalid))
        for tp, records in batches.items():
            metrics.RECORDS_CONSUMED.labels(self.name, tp.topic).inc(len(records))
        if next_offsets:
            try:
                self.consumer.commit(next_offsets)
            except CommitFailedError:
                # The group rebalanced under us: another member reads these records again, harmlessly.
                logger.warning("%s: offset commit refused after a rebalance; the batch will be seen again", self.name)
        self.records_total += len(envelopes) + len(invalid)
        self.invalid_total += len(invalid)

    def _until_done(self, handler: Callable[[list], object], items: list) -> None:
        """Database outages are not failures: keep the batch, back off, try again, burn no attempt."""
        delay = 0.5
        while True:
            try:
                handler(items)
                return
            except (OperationalError, InterfaceError) as exc:
                if self.stop.is_set():
                    raise SystemExit(f"{self.name}: stopped while the database was unreachable; the batch stays uncommitted")
                logger.warning("%s: database unavailable (%s); retrying in %.1f s", self.name, str(exc).strip(), delay)
                connection.close()
                self.stop.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 15.0)
                close_old_connections()
