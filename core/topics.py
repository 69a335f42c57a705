"""The topics as objects: each knows its name, how its records are keyed and what message they carry,
so that publishing reads `topics.SEND.enqueue(task)` and no publish site spells a key or an encoding.

Keys decide partitions, and partitions decide order: every record about one recipient is keyed by
that recipient, so a recipient's notifications, retries and dead letters keep their order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core import broker
from core.db import Condition
from core.messages import CampaignCreated, ChannelRetry, NotificationTask, send_record_decode
from core.models import OutboxEvent
from core.outbox import outbox_enqueue, outbox_enqueue_keyed


@dataclass(frozen=True)
class Topic:
    logical: str  # the name without KAFKA_TOPIC_PREFIX
    message: type | None  # what its records decode to (None: records of other topics, as they were read)
    key: Callable[[Any], str]
    decoder: Callable[[bytes | None], Any] | None = None  # when its records are of several types

    @property
    def name(self) -> str:
        """The real topic name (KAFKA_TOPIC_PREFIX + logical)."""
        return broker.topic_name(self.logical)

    def decode(self, value: bytes | None):
        return self.decoder(value) if self.decoder else self.message.decode(value)

    def event(self, message) -> OutboxEvent:
        """An unsaved outbox event publishing `message` to this topic."""
        return OutboxEvent(topic=self.logical, key=self.key(message), payload=message.encode())

    def enqueue(self, message, *, only_if: Condition | None = None) -> bool:
        """Queue `message` for publishing, in the caller's transaction (the relay publishes it); with
        `only_if`, only while that condition holds (one statement decides): returns whether it was."""
        return outbox_enqueue(topic=self.logical, key=self.key(message), payload=message.encode(), only_if=only_if)

    def enqueue_many(self, messages: Iterable) -> None:
        key = self.key
        outbox_enqueue_keyed(topic=self.logical, records=[(key(m), m.encode()) for m in messages])


# Tasks keyed by recipient, and campaign chunks produced to their recipients' partition (CampaignChunk).
SEND = Topic(broker.NOTIFICATIONS_SEND, NotificationTask, key=lambda task: task.recipient, decoder=send_record_decode)
CAMPAIGNS = Topic(broker.OFFERS_CREATED, CampaignCreated, key=lambda event: str(event.campaign_id))
RETRY = Topic(broker.NOTIFICATIONS_RETRY, ChannelRetry, key=lambda retry: retry.recipient)
# Dead letters carry the record as it was consumed (any topic's), keyed by its recipient when known.
DLQ = Topic(broker.NOTIFICATIONS_DLQ, None, key=lambda recipient: recipient)

ALL = (SEND, CAMPAIGNS, RETRY, DLQ)


def topic_of(name: str) -> Topic | None:
    """The topic a real name (as a record or a dead letter gives it) belongs to, if it is one of ours."""
    logical = name.removeprefix(settings.KAFKA_TOPIC_PREFIX) if name.startswith(settings.KAFKA_TOPIC_PREFIX) else None
    return next((t for t in ALL if t.logical == logical), None)
