from __future__ import annotations

from kafka.errors import KafkaError

from delivery import broker
from delivery.messages import NotificationTask


class PublishFailed(RuntimeError):
    pass


class TaskPublisher:
    """Produces notification tasks keyed by recipient; `flush` returns only when the broker has
    acknowledged every task published so far, and raises if any was refused."""

    def __init__(self) -> None:
        self.producer = broker.producer_create(linger_ms=20)
        self.topic = broker.topic_name(broker.NOTIFICATIONS_SEND)
        self._errors: list[Exception] = []

    def publish(self, task: NotificationTask) -> None:
        future = self.producer.send(self.topic, key=task.recipient.encode(), value=task.encode())
        future.add_errback(self._errors.append)

    def flush(self) -> None:
        """Wait for every acknowledgement; raises PublishFailed if any task was refused."""
        try:
            self.producer.flush(timeout=120)
        except KafkaError as exc:
            raise PublishFailed(f"the broker did not acknowledge every task: {exc}") from exc
        if self._errors:
            first, count = self._errors[0], len(self._errors)
            self._errors.clear()
            raise PublishFailed(f"{count} tasks were refused by the broker, first: {first}")

    def close(self) -> None:
        self.producer.close(timeout=10)
