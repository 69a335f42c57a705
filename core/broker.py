"""Kafka connectivity: topic names, and the one place that builds producers, consumers and admin clients.

Only the delivery layer imports kafka; the rest of the project sees these functions and the
dataclasses in core.messages.
"""

from __future__ import annotations

import contextlib
import logging
import time

from django.conf import settings
from django.utils import timezone
from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
)
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

logger = logging.getLogger(__name__)

# Logical topic names; every real name is KAFKA_TOPIC_PREFIX + one of these.
NOTIFICATIONS_SEND = "notifications.send"
OFFERS_CREATED = "offers.created"
NOTIFICATIONS_RETRY = "notifications.retry"
NOTIFICATIONS_DLQ = "notifications.dlq"
ALL_TOPICS = (NOTIFICATIONS_SEND, OFFERS_CREATED, NOTIFICATIONS_RETRY, NOTIFICATIONS_DLQ)

WORKER_GROUP = "notification-workers"
DISPATCHER_GROUP = "campaign-dispatchers"


def topic_name(logical: str) -> str:
    return f"{settings.KAFKA_TOPIC_PREFIX}{logical}"


def group_name(logical: str) -> str:
    return f"{settings.KAFKA_TOPIC_PREFIX}{logical}"


def producer_create(**overrides) -> KafkaProducer:
    """A producer that waits for every replica's acknowledgement.

    Not idempotent on purpose: an idempotent producer's id is broker state, which a broker that lost
    its data (or expired the id) no longer knows, and the producer then retries forever. What
    idempotence would save us from, a record written twice by a retry, every consumer here already
    drops (the ledger). Where order matters (the relay), pass max_in_flight_requests_per_connection=1.
    """
    config = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "acks": "all",
        "enable_idempotence": False,
        # A send the broker never answers fails within this time instead of the default two minutes.
        "delivery_timeout_ms": 30_000,
        "linger_ms": settings.KAFKA_PRODUCER_LINGER_MS,
        "batch_size": settings.KAFKA_PRODUCER_BATCH_BYTES,
        "max_request_size": 4 * 1024 * 1024,
        "retries": 5,
        "request_timeout_ms": 10_000,
        "max_block_ms": 10_000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


class AssignmentWatch(ConsumerRebalanceListener):
    """Notes that the group gave this member partitions, so that the loop starts each of them again
    from the group's committed offset (see `BatchConsumer`)."""

    def __init__(self) -> None:
        self.changed = False
        self.rejoining = False  # a rebalance began: an idle loop polls at full pace until it ends

    def on_partitions_revoked(self, revoked) -> None:
        self.rejoining = True

    def on_partitions_assigned(self, assigned) -> None:
        self.changed = True
        self.rejoining = False


def consumer_create(
    *, logical_topics: tuple[str, ...], logical_group: str, max_poll_records: int, max_poll_interval_ms: int,
    watch: AssignmentWatch | None = None,
) -> KafkaConsumer:
    """A group member that never auto-commits: the caller commits after its database transaction."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=group_name(logical_group),
        enable_auto_commit=False,
        # A new group starts at the beginning; "latest" is unreliable on some brokers (see README).
        auto_offset_reset="earliest",
        session_timeout_ms=settings.KAFKA_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=settings.KAFKA_HEARTBEAT_INTERVAL_MS,
        fetch_max_wait_ms=settings.KAFKA_FETCH_MAX_WAIT_MS,
        max_poll_records=max_poll_records,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        # The longest a batch may hold the loop before the group gives its partitions to another member;
        # also how long a rebalance waits for members to rejoin (heartbeats run in the background).
        max_poll_interval_ms=max_poll_interval_ms,
    )
    consumer.subscribe([topic_name(t) for t in logical_topics], listener=watch)
    return consumer


def topics_ensure(logical_topics: tuple[str, ...] = ALL_TOPICS) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Safe to call at every start."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        wanted = [topic_name(t) for t in logical_topics]
        missing = [
            NewTopic(name, num_partitions=settings.KAFKA_PARTITIONS, replication_factor=settings.KAFKA_REPLICATION_FACTOR)
            for name in wanted
            if name not in existing
        ]
        created = []
        for new_topic in missing:  # one at a time: a topic made meanwhile by another process is fine
            try:
                admin.create_topics([new_topic])
                created.append(new_topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def topic_ids(names: list[str], admin: KafkaAdminClient) -> dict[str, object]:
    """The broker's id of each of these topics that exists (a recreated topic gets a new id)."""
    return {t["name"]: t["topic_id"] for t in admin.describe_topics(names) if t.get("error_code", 0) == 0}


_losses = 0  # how many times a TopicWatch of this process saw the broker lose topics


def broker_losses() -> int:
    """Producers remember this when they are made: one made before the broker lost our topics has
    metadata of topics that no longer exist (their partitions too) and must be replaced."""
    return _losses


class TopicWatch:
    """Notices a broker that lost topics: one missing (created again here), or one whose id changed
    since it was last seen (recreated: its records are gone). Asks the broker every `interval`
    seconds at most; `lost_topics` answers the logical names lost since the last look."""

    def __init__(self, *, logical_topics: tuple[str, ...], interval: float, remember: bool = False) -> None:
        """`remember`: keep the ids seen in PostgreSQL (core.models.BrokerTopic) and start from the ones
        kept there, so that a broker that lost our topics while no process ran is noticed at the first
        look (the relays: their recovery publishes the retained events again)."""
        self.names = {topic_name(t): t for t in logical_topics}
        self.interval = interval
        self.remember = remember
        self._ids: dict[str, object] = {}
        self._recalled = False
        self._last = 0.0
        self._admin: KafkaAdminClient | None = None  # kept between looks: making one costs a handshake

    def lost_topics(self, *, max_age: float | None = None) -> list[str]:
        """`max_age`: look if the last look is older than this (default: the interval)."""
        if time.monotonic() - self._last < (self.interval if max_age is None else max_age):
            return []
        self._last = time.monotonic()
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=5_000)
            described = topic_ids(list(self.names), self._admin)
            if len(described) < len(self.names):
                created = topics_ensure(tuple(self.names.values()))
                if created:
                    logger.warning("the broker had lost topics; created %s again", ", ".join(created))
                described = topic_ids(list(self.names), self._admin)
        except Exception:
            self.close()  # a broker that restarted: the next look connects afresh
            raise
        described = {name: str(topic_id) for name, topic_id in described.items()}
        if self.remember and not self._recalled:
            self._ids, self._recalled = self._recall(), True
        lost = {self.names[name] for name, seen in self._ids.items() if described.get(name) != seen}
        if self.remember and described != self._ids:
            self._keep(described)
        self._ids = described
        if lost:
            global _losses
            _losses += 1
        return sorted(lost)

    def _recall(self) -> dict[str, object]:
        from core.models import BrokerTopic

        return dict(BrokerTopic.objects.filter(name__in=list(self.names)).values_list("name", "topic_id"))

    @staticmethod
    def _keep(described: dict[str, str]) -> None:
        from core.models import BrokerTopic

        for name, topic_id in described.items():
            BrokerTopic.objects.update_or_create(name=name, defaults={"topic_id": topic_id, "seen_at": timezone.now()})

    def check_soon(self) -> None:
        """Look at the next call, whatever the interval."""
        self._last = 0.0

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


def broker_reachable(timeout_ms: int = 2000) -> bool:
    """Whether a Kafka-protocol broker answers a metadata request (readiness probes)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=timeout_ms,
                                 bootstrap_timeout_ms=timeout_ms)
    except Exception:  # noqa: BLE001 - any failure to connect means "not ready"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()
