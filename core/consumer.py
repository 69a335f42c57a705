"""The consume loop shared by the worker and the dispatcher.

poll a batch -> decode (records that are not ours go to `handle_invalid`: dead letters) -> handle
the whole batch (one database transaction in the handler) -> commit offset+1 of each partition's
last handled record. Offsets are committed only after the handlers returned, so a process killed
anywhere before that commit sees the batch again, and the handlers are idempotent.

No record stops a partition: when a batch fails for a reason that is not an outage, it is split in
halves until the one record at fault is found; that one is dead-lettered (`handle_failed`) and the
rest are delivered. An outage (database or broker, told by what it is: `core.failures`) is
waited out with the partitions paused while the loop keeps polling, so the process stays in its group.

Nothing here waits for a time: work that waits is the scheduler's (`core.scheduler`). SIGTERM/SIGINT
set a flag: the batch in hand is finished and committed, then the consumer leaves its group.

Idle costs nothing: after CONSUMER_IDLE_AFTER_SECONDS without records, the loop stops fetching
continuously (each fetch waits at most KAFKA_FETCH_MAX_WAIT_MS, which is short for brokers that do
not wake a waiting fetch when data arrives). It waits for the outbox's NOTIFY instead (almost every
record we consume went through the outbox a few milliseconds earlier), and polls once every
CONSUMER_IDLE_CHECK_SECONDS: that poll keeps the group membership and answers rebalances, and sends
one fetch, whose answer the next poll reads; so records from producers that bypass the outbox are
read within two checks. A NOTIFY, any record, or any assignment makes the loop active again (the
first fetches of newly assigned partitions, offset lookups first, run at full pace).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from core import broker
from core.failures import Backoff, FailureKind, describe, failure_kind
from core.messages import Envelope, InvalidPayload, InvalidRecord, Origin, Pack
from core.outbox import OutboxListener
from core.topics import Topic

logger = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 5.0
STATUS_SECONDS = 2.0
# A batch that meets a passing conflict (deadlock, statement timeout) is tried this many more times
# before it is split to find a record at fault.
TRANSIENT_ATTEMPTS = 3


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


class Activity:
    """Whether a consume loop is active (fetching continuously) or idle (waiting for a NOTIFY, polling
    once a check). Pure: the loop tells it what happened and when (monotonic seconds)."""

    def __init__(self, *, idle_after: float, can_idle: bool, now: float) -> None:
        self.idle_after = idle_after
        self.can_idle = can_idle  # False without a wake-up (SQLite has no NOTIFY): always active
        self.last_active = now
        self.idle = False

    def woke(self, *, now: float) -> bool:
        """Records, a NOTIFY or an assignment: active from now on. True when it was idle."""
        was_idle, self.idle, self.last_active = self.idle, False, now
        return was_idle

    def quiet(self, *, now: float, in_group: bool) -> bool:
        """A poll with nothing: True when the loop goes idle now (and only then). Never before the
        member holds an assignment, nor during a rebalance (`in_group` False): joining a group takes
        polls at full pace."""
        if self.idle or not self.can_idle or not in_group or now - self.last_active < self.idle_after:
            return False
        self.idle = True
        return True


@dataclass(frozen=True)
class BatchStats:
    """One batch handled: for the `on_batch` callback (metrics)."""

    consumer: str
    seconds: float
    handled: int
    invalid: int
    records_per_topic: dict[str, int]


@dataclass(frozen=True)
class ConsumerStatus:
    """What a consumer says of itself every few seconds, and once when it stops (`stopped`): for the
    `on_status` callback (the status table, lag gauges)."""

    consumer: str
    process: str
    group: str
    records_total: int
    lag: dict[tuple[str, int], int]
    stopped: bool = False


class BatchConsumer:
    """The consume loop. It reports through callbacks and writes nothing of its own: `heartbeat.beat()`
    at least once a second while alive, `on_batch(BatchStats)` after each batch, `on_status(ConsumerStatus)`
    every STATUS_SECONDS and once on stopping."""

    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[Topic],
        logical_group: str,
        handle_batch: Callable[[list[Envelope]], object],
        handle_invalid: Callable[[list[InvalidRecord]], object],
        handle_failed: Callable[[Envelope, BaseException], object],
        max_poll_records: int,
        max_poll_interval_ms: int,
        stop: StopFlag,
        heartbeat: Heartbeat | None = None,
        on_batch: Callable[[BatchStats], object] = lambda stats: None,
        on_status: Callable[[ConsumerStatus], object] = lambda status: None,
    ) -> None:
        self.on_batch = on_batch
        self.on_status = on_status
        self.name = name
        self.decoders = {topic.name: topic.decode for topic in topics}
        self.handle_batch = handle_batch
        self.handle_invalid = handle_invalid
        self.handle_failed = handle_failed
        self.max_poll_records = max_poll_records
        self.stop = stop
        self.heartbeat = heartbeat or Heartbeat(None)
        self.logical_topics = tuple(topic.logical for topic in topics)
        self.topic_watch = broker.TopicWatch(logical_topics=self.logical_topics,
                                             interval=settings.RELAY_LOSS_CHECK_SECONDS)
        self.assignment_watch = broker.AssignmentWatch()
        self.consumer = broker.consumer_create(
            logical_topics=self.logical_topics, logical_group=logical_group, max_poll_records=max_poll_records,
            max_poll_interval_ms=max_poll_interval_ms, watch=self.assignment_watch,
        )
        self.records_total = 0
        self.invalid_total = 0
        self.group = broker.group_name(logical_group)
        self.process_name = f"{name}@{socket.gethostname()}:{os.getpid()}"
        self._last_status = 0.0
        self._last_keep_alive = 0.0
        self.listener = OutboxListener(name=name)
        self.activity = Activity(idle_after=settings.CONSUMER_IDLE_AFTER_SECONDS, can_idle=self.listener.can_wake,
                                 now=time.monotonic())

    def run(self) -> None:
        started = last_log = time.monotonic()
        logged_records = 0
        try:
            while not self.stop.is_set():
                self.heartbeat.beat()
                idle = self.activity.idle
                # Idle: wait for the outbox's NOTIFY (or the check's time), then one poll (see the docstring).
                notified = idle and self.listener.wait(settings.CONSUMER_IDLE_CHECK_SECONDS)
                try:
                    batches = self.consumer.poll(timeout_ms=0 if idle else 500)
                except KafkaError as exc:  # the broker is away: the client reconnects by itself
                    logger.warning("%s: poll failed (%s); trying again", self.name, exc)
                    self.stop.wait(1.0)
                    continue
                now = time.monotonic()
                if self.assignment_watch.changed:
                    self._wake(now, "partitions assigned")
                    self._rewind_to_committed()  # what this poll returned is read again from there
                    continue
                in_group = bool(self.consumer.assignment()) and not self.assignment_watch.rejoining
                if batches or notified or not in_group:
                    self._wake(now, "records" if batches else "an outbox NOTIFY" if notified else "a rebalance")
                if batches:
                    self._process(batches)
                elif self.activity.quiet(now=now, in_group=in_group):
                    self.listener.drain()  # what they announced was read while active
                    logger.info("%s: idle after %.1f s without records; fetching again on an outbox NOTIFY, "
                                "and once every %.1f s", self.name, self.activity.idle_after,
                                settings.CONSUMER_IDLE_CHECK_SECONDS)
                self._report_status()
                self._watch_topics()
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
            self.topic_watch.close()
            self.listener.close()
            self.consumer.close(autocommit=False)
            self.on_status(self._status(lag={}, stopped=True))

    def _wake(self, now: float, why: str) -> None:
        if self.activity.woke(now=now):
            logger.debug("%s: active again (%s)", self.name, why)

    def keep_alive(self) -> None:
        """For a handler that holds the loop a long time (a fan-out, between its pages): poll once with
        every partition paused, so the group keeps this member (max_poll_interval_ms counts from the
        last poll) and a rebalance is answered, fetching nothing. At most once a second."""
        if time.monotonic() - self._last_keep_alive < 1.0:
            return
        self._last_keep_alive = time.monotonic()
        with contextlib.suppress(KafkaError, ValueError):  # the broker away, a partition unassigned meanwhile
            held = self.consumer.assignment()
            self.consumer.pause(*held)
            try:
                self.consumer.poll(timeout_ms=0)
            finally:
                self.consumer.resume(*self.consumer.assignment())

    def _watch_topics(self) -> None:
        """A broker that lost our topics: read them again from the beginning of their new logs (the
        group, lost too, is rejoined by the client; each assignment rewinds to the committed offsets,
        none now). The ledger drops whatever is read twice."""
        try:
            lost = self.topic_watch.lost_topics()
        except Exception as exc:  # noqa: BLE001 - the broker is away: the next look tries again
            logger.debug("%s: topics not checked (%s)", self.name, exc)
            return
        if not lost:
            return
        logger.warning("%s: the broker lost %s; reading those topics again from the beginning", self.name, ", ".join(lost))
        names = {broker.topic_name(t) for t in lost}
        lost_partitions = [tp for tp in self.consumer.assignment() if tp.topic in names]
        if not lost_partitions:
            return  # the group dropped us too: the next assignment rewinds (see _rewind_to_committed)
        with contextlib.suppress(KafkaError, ValueError):  # ValueError: unassigned meanwhile
            self.consumer.seek_to_beginning(*lost_partitions)
            self.consumer.resume(*lost_partitions)

    def _rewind_to_committed(self) -> None:
        """After every assignment, start each partition from the group's committed offset (the
        beginning where there is none). kafka-python keeps its own position for a partition it held
        before; after a broker came back empty, that position can point past records the new log
        holds below it, and they would be skipped. Reading from the committed offset only repeats
        what the ledger drops."""
        try:
            assigned = self.consumer.assignment()
            for tp in assigned:
                committed = self.consumer.committed(tp, timeout_ms=5000)
                if committed is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed)
            self.consumer.resume(*self.consumer.assignment())
        except (KafkaError, ValueError) as exc:  # ValueError: a partition unassigned meanwhile
            logger.warning("%s: could not read the committed offsets (%s); trying again", self.name, exc)
            self.stop.wait(0.5)
            return
        self.assignment_watch.changed = False
        logger.info("%s: assigned %d partitions; reading each from its committed offset", self.name, len(assigned))

    def _report_status(self) -> None:
        """Every few seconds: lag per partition (high watermark from fetches, never ListOffsets) to `on_status`."""
        if time.monotonic() - self._last_status < STATUS_SECONDS:
            return
        self._last_status = time.monotonic()
        lag = {}
        try:
            for tp in self.consumer.assignment():
                highwater, position = self.consumer.highwater(tp), self.consumer.position(tp, timeout_ms=100)
                if highwater is not None and position is not None:
                    lag[(tp.topic, tp.partition)] = max(highwater - position, 0)
        except KafkaError:
            pass
        self.on_status(self._status(lag=lag))

    def _status(self, *, lag: dict[tuple[str, int], int], stopped: bool = False) -> ConsumerStatus:
        return ConsumerStatus(consumer=self.name, process=self.process_name, group=self.group,
                              records_total=self.records_total, lag=lag, stopped=stopped)

    def _process(self, batches: dict) -> None:
        """Handle what a poll returned, in parts of at most max_poll_records messages (a pack, such as a
        campaign chunk, counts as its messages), committing each part's offsets once it is handled."""
        envelopes: list[Envelope] = []
        invalid: list[InvalidRecord] = []
        next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        per_topic: dict[str, int] = {}
        messages = 0
        for tp, records in batches.items():
            decode = self.decoders[tp.topic]
            for record in records:
                origin = Origin(record.topic, record.partition, record.offset)
                try:
                    message = decode(record.value)
                except InvalidPayload as exc:
                    invalid.append(InvalidRecord(origin, record.key, record.value, str(exc)))
                    messages += 1
                else:
                    envelopes.append(Envelope(message, origin, record.value))
                    messages += message.size if isinstance(message, Pack) else 1
                next_offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + 1
                if messages >= self.max_poll_records:
                    self._handle_part(envelopes, invalid, next_offsets, per_topic, messages)
                    if self.stop.is_set():
                        return  # stopping: the rest of this poll is not committed, and is read again
                    envelopes, invalid, next_offsets, per_topic, messages = [], [], {}, {}, 0
                    self.keep_alive()  # a poll of packs can be many parts: the group keeps this member
        if next_offsets:
            self._handle_part(envelopes, invalid, next_offsets, per_topic, messages)

    def _handle_part(self, envelopes: list[Envelope], invalid: list[InvalidRecord],
                     next_offsets: dict[TopicPartition, OffsetAndMetadata], per_topic: dict[str, int],
                     messages: int) -> None:
        started = time.perf_counter()
        if invalid:
            self._isolate(invalid, self.handle_invalid, None)
        if envelopes:
            self._isolate(envelopes, self.handle_batch, self.handle_failed)
        self.on_batch(BatchStats(consumer=self.name, seconds=time.perf_counter() - started,
                                 handled=messages, invalid=len(invalid), records_per_topic=per_topic))
        try:
            self.consumer.commit(next_offsets)
        except KafkaError as exc:
            # A rebalance or a broker that restarted: the records are read again, harmlessly.
            logger.warning("%s: offset commit failed (%s); the batch will be seen again", self.name, exc)
        self.records_total += messages
        self.invalid_total += len(invalid)

    def _isolate(self, items: list, handler: Callable[[list], object], dead_letter: Callable | None) -> None:
        """Handle `items`; when the handler fails for a reason other than an outage, split them in
        halves until the one item that fails is found, and dead-letter that one alone. A pack (a
        campaign chunk) is split the same way, down to its one message. Each handler call is all or
        nothing (one transaction), so a failed half leaves no trace."""
        parts = [items]
        while parts:
            part = parts.pop()
            try:
                self._until_done(handler, part)
                continue
            except Exception as exc:  # noqa: BLE001 - classified in _until_done: here, a record's fault
                if self.stop.is_set():
                    raise  # stopping: the batch stays uncommitted and is seen again
                error = exc
            if len(part) > 1:
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]  # the first half first: each key keeps its order
                continue
            item = part[0]
            if isinstance(item.message, Pack):
                if item.message.size > 1:
                    first, second = item.message.split()
                    parts += [[Envelope(second, item.origin, None)], [Envelope(first, item.origin, None)]]
                    continue
                # The one message of a pack is dead-lettered as the single record it would have been.
                item = Envelope(item.message.unpack()[0], item.origin, None)
            origin = item.origin
            logger.warning("%s: record %s[%d]@%d failed on its own (%s): dead-lettered; the rest of its batch goes on",
                           self.name, origin.topic, origin.partition, origin.offset, describe(error))
            if dead_letter is None:
                continue
            # Its text was made storable first, so this fails only when the database does: wait for it
            # as for an outage rather than lose the record.
            try:
                self._until_done(dead_letter, item, error, patient=True)
            except Exception:  # noqa: BLE001 - the handler's own last resort failed too: say so, go on
                if self.stop.is_set():
                    raise
                logger.exception("%s: could not dead-letter record %s[%d]@%d; skipping it", self.name,
                                 origin.topic, origin.partition, origin.offset)

    def _until_done(self, handler: Callable, *args, patient: bool = False) -> None:
        """Outages are not failures: keep the batch, pause the partitions, keep polling (to stay in the
        group), back off and try again, burning no attempt. A passing conflict (deadlock, statement
        timeout) is tried again a few times. Anything else is raised for `_isolate`; with `patient`
        (writing a dead letter, the last step for a record) conflicts are waited out too."""
        backoff = Backoff()
        transient_attempts = 0
        paused = False
        try:
            while True:
                try:
                    handler(*args)
                    return
                except Exception as exc:
                    kind = failure_kind(exc)
                    if kind is FailureKind.POISON:
                        raise
                    if patient:  # writing a dead letter: conflicts are waited out like outages
                        logger.error("%s: could not write a dead letter (%s); trying again", self.name, describe(exc))
                    elif kind is FailureKind.TRANSIENT:
                        transient_attempts += 1
                        if transient_attempts > TRANSIENT_ATTEMPTS:
                            raise
                    if self.stop.is_set():
                        raise SystemExit(f"{self.name}: stopped during an outage ({describe(exc)}); "
                                         "the batch stays uncommitted and is seen again")
                    delay = backoff.next()
                    what = "database or broker unavailable" if kind is FailureKind.OUTAGE else "conflict"
                    logger.warning("%s: %s (%s); retrying in %.1f s", self.name, what, describe(exc), delay)
                    if kind is FailureKind.OUTAGE:
                        with contextlib.suppress(Exception):
                            connection.close()
                        if not paused:
                            self._pause_all()
                            paused = True
                    self._wait_polling(delay)
                    close_old_connections()
        finally:
            if paused:
                self._resume_all()

    def _pause_all(self) -> None:
        with contextlib.suppress(KafkaError):
            self.consumer.pause(*self.consumer.assignment())

    def _resume_all(self) -> None:
        """Resume what the outage paused."""
        with contextlib.suppress(KafkaError):
            self.consumer.resume(*self.consumer.assignment())

    def _wait_polling(self, seconds: float) -> None:
        """Wait, polling all the while (the group sees us alive). Partitions assigned meanwhile are not
        paused yet: their records are put back and the partitions paused too."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self.heartbeat.beat()
            try:
                batches = self.consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000) or 1)
            except KafkaError as exc:
                logger.debug("%s: poll during an outage failed (%s)", self.name, exc)
                self.stop.wait(min(remaining, 0.5))
                continue
            for tp, records in batches.items():
                if records:
                    self.consumer.seek(tp, records[0].offset)
                self.consumer.pause(tp)
