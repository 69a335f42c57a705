from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from core import broker, topics
from core.messages import CampaignChunk
from core.relay import producer_discard

FLUSH_TIMEOUT_SECONDS = 30


class PublishFailed(RuntimeError):
    """The broker did not take every chunk (its error is the cause); the producer was dropped, and
    the next fan-out starts a new one."""


def partition_of(key: str, partitions: int) -> int:
    """The partition the producers' default partitioner (kafka-python's, as the Java client's: murmur2
    of the key) gives a record keyed `key` on a topic of `partitions` partitions."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Chunker:
    """Groups recipient ids by the partition their keys map to, handing out each group as it reaches
    `size` (and the rest at the end): at most partitions x size ids are held at once."""

    def __init__(self, *, partitions: int, size: int) -> None:
        self.partitions = partitions
        self.size = size
        self._open: dict[int, list[str]] = {}

    def add(self, keys: Iterable[str]) -> list[tuple[int, list[str]]]:
        full = []
        partitions, size, open_ = self.partitions, self.size, self._open
        for key in keys:
            partition = partition_of(key, partitions)
            chunk = open_.setdefault(partition, [])
            chunk.append(key)
            if len(chunk) >= size:
                full.append((partition, chunk))
                del open_[partition]
        return full

    def rest(self) -> list[tuple[int, list[str]]]:
        rest, self._open = sorted(self._open.items()), {}
        return rest


class ChunkPublisher:
    """Produces a campaign's chunks, each to the partition its recipients' keys map to; `flush`
    returns only when the broker has acknowledged every chunk published so far, and raises if any was
    refused.

    Each fan-out begins with a new producer, so its partition count is the broker's at that moment
    (partitions added since the last fan-out move the mapping, as they do for keyed records). It
    heals itself: after any broker error (a broker that restarted empty, a fenced epoch) the producer
    is dropped without waiting on it, and the caller only has to redo its work (a fan-out is idempotent)."""

    def __init__(self) -> None:
        self._producer: KafkaProducer | None = None
        self.topic = topics.SEND.name
        self._errors: list[Exception] = []

    def begin(self) -> int:
        """Start a fan-out: returns the topic's partition count, read from the broker now."""
        self.close()
        try:
            self._producer = broker.producer_create(linger_ms=20)
            return len(self._producer.partitions_for(self.topic))
        except KafkaError as exc:
            self._drop()
            raise PublishFailed(f"the broker did not say how many partitions {self.topic} has: {exc}") from exc

    def publish(self, chunk: CampaignChunk, *, partition: int) -> None:
        if self._producer is None:
            raise RuntimeError("begin() a fan-out before publishing its chunks")
        try:
            future = self._producer.send(self.topic, key=str(chunk.campaign_id).encode(), value=chunk.encode(),
                                         partition=partition)
        except KafkaError as exc:
            self._drop()
            raise PublishFailed(f"the broker did not take a chunk: {exc}") from exc
        future.add_errback(self._errors.append)

    def flush(self) -> None:
        """Wait for every acknowledgement; raises PublishFailed if any task was refused."""
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        except KafkaError as exc:
            self._drop()
            raise PublishFailed(f"the broker did not acknowledge every chunk: {exc}") from exc
        if self._errors:
            first, count = self._errors[0], len(self._errors)
            self._drop()
            raise PublishFailed(f"{count} chunks were refused by the broker, first: {first}") from first

    def _drop(self) -> None:
        producer, self._producer = self._producer, None
        self._errors = []
        producer_discard(producer)

    def close(self) -> None:
        if self._producer is None:
            return
        try:
            self._producer.close(timeout=10)
        except Exception:  # noqa: BLE001 - shutting down: a producer that cannot finish is dropped
            self._drop()
        self._producer, self._errors = None, []
