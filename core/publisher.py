from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

from core import broker, topics
from core.messages import NotificationTask
from core.relay import producer_discard

FLUSH_TIMEOUT_SECONDS = 30


class PublishFailed(RuntimeError):
    """The broker did not take every task (its error is the cause); the producer was dropped, and
    the next publish starts a new one."""


class TaskPublisher:
    """Produces notification tasks keyed by recipient; `flush` returns only when the broker has
    acknowledged every task published so far, and raises if any was refused.

    It heals itself: after any broker error (a broker that restarted empty, an unknown producer id,
    a fenced epoch) the producer is dropped without waiting on it, and the next publish makes a new
    one, so the caller only has to redo its work (a fan-out is idempotent)."""

    def __init__(self) -> None:
        self._producer: KafkaProducer | None = None
        self._made_at_losses = 0
        self.topic = topics.SEND.name
        self._errors: list[Exception] = []

    def publish(self, task: NotificationTask) -> None:
        try:
            if self._producer is not None and self._made_at_losses != broker.broker_losses():
                self._drop()  # made before the broker lost our topics: its metadata is of topics gone
            if self._producer is None:
                self._producer = broker.producer_create(linger_ms=20)
                self._made_at_losses = broker.broker_losses()
            future = self._producer.send(self.topic, key=topics.SEND.key(task).encode(), value=task.encode())
        except KafkaError as exc:
            self._drop()
            raise PublishFailed(f"the broker did not take a task: {exc}") from exc
        future.add_errback(self._errors.append)

    def flush(self) -> None:
        """Wait for every acknowledgement; raises PublishFailed if any task was refused."""
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        except KafkaError as exc:
            self._drop()
            raise PublishFailed(f"the broker did not acknowledge every task: {exc}") from exc
        if self._errors:
            first, count = self._errors[0], len(self._errors)
            self._drop()
            raise PublishFailed(f"{count} tasks were refused by the broker, first: {first}") from first

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
