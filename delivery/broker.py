"""Kafka connectivity: topic names, and the one place that builds producers, consumers and admin clients.

Only the delivery layer imports kafka; the rest of the project sees these functions and the
dataclasses in delivery.messages.
"""

from __future__ import annotations

import logging

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
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
    config = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.KAFKA_PRODUCER_LINGER_MS,
        "batch_size": settings.KAFKA_PRODUCER_BATCH_BYTES,
        "max_request_size": 4 * 1024 * 1024,
        "retries": 5,
        "request_timeout_ms": 10_000,
        "max_block_ms": 10_000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer_create(*, logical_topics: tuple[str, ...], logical_group: str, max_poll_records: int) -> KafkaConsumer:
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
        # Long fan-outs and database outages hold a batch for a while; heartbeats run in the background.
        max_poll_interval_ms=600_000,
    )
    consumer.subscribe([topic_name(t) for t in logical_topics])
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
