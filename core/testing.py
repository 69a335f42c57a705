"""Helpers for the tests of every layer: records straight onto a topic (as any Kafka producer could
send them), a topic read from its beginning, and `manage.py check` under other settings. Here, in the
transport layer, because only it talks to Kafka."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from core import broker
from core.processes import BASE_DIR


def records_produce(*records: tuple[str, bytes], topic: str = broker.NOTIFICATIONS_SEND) -> None:
    """(key, value) records onto a logical topic with a plain producer, flushed."""
    producer = broker.producer_create()
    for key, value in records:
        producer.send(broker.topic_name(topic), key=key.encode(), value=value)
    producer.flush(timeout=30)
    producer.close()


def records_produce_to_partitions(*records: tuple[int, bytes], topic: str = broker.NOTIFICATIONS_SEND) -> None:
    """(partition, value) records onto a logical topic, each to the partition given, flushed."""
    producer = broker.producer_create()
    for partition, value in records:
        producer.send(broker.topic_name(topic), value=value, partition=partition)
    producer.flush(timeout=30)
    producer.close()


def topic_partition_count(logical: str = broker.NOTIFICATIONS_SEND) -> int:
    """How many partitions the broker says a logical topic has."""
    producer = broker.producer_create()
    try:
        return len(producer.partitions_for(broker.topic_name(logical)))
    finally:
        producer.close()


def topic_read(logical: str, *, until, timeout: float = 30.0) -> list:
    """The records of a logical topic from its beginning, polled until `until(records so far)` holds."""
    consumer = KafkaConsumer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, enable_auto_commit=False)
    try:
        topic = broker.topic_name(logical)
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        consumer.seek_to_beginning()
        seen: list = []
        deadline = time.monotonic() + timeout
        while not until(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s reading {topic}: {len(seen)} records")
            for records in consumer.poll(timeout_ms=200).values():
                seen.extend(records)
        return seen
    finally:
        consumer.close()


def manage_check(**env_changes: str | None) -> subprocess.CompletedProcess:
    """`manage.py check` in a fresh process with these environment variables changed (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in env_changes or env_changes[k] is not None}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["ENV_FILE"] = "/dev/null"
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=60)


def group_committed(logical_group: str) -> dict:
    """The offsets a consumer group has committed, per TopicPartition."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
    try:
        group = broker.group_name(logical_group)
        return admin.list_group_offsets(group)[group]
    finally:
        admin.close()


class WireStatements:
    """What one Django connection sends to PostgreSQL inside a `with` block, read from libpq's own
    trace of the wire: every statement (Django's cursors, raw psycopg cursors, BEGIN, COMMIT,
    SAVEPOINT, health checks alike). `statements` lists their texts (a prepared statement executed
    again shows as `<prepared>`)."""

    def __init__(self, connection):
        self.connection = connection
        self.statements: list[str] = []

    def __enter__(self) -> WireStatements:
        import tempfile

        import psycopg

        self.connection.ensure_connection()
        self._file = tempfile.TemporaryFile("w+")
        self._pgconn = self.connection.connection.pgconn
        self._pgconn.trace(self._file.fileno())
        self._pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        return self

    def __exit__(self, *exc) -> None:
        self._pgconn.untrace()
        self._file.seek(0)
        parsed = ""
        for line in self._file.read().splitlines():
            direction, _, kind, *rest = line.split("\t") + [""]
            if direction != "F":
                continue
            if kind == "Query":
                self.statements.append(rest[0].strip().strip('"'))
            elif kind == "Parse":
                parsed = rest[0].strip()
            elif kind == "Execute":
                match = re.match(r'\s*"[^"]*" "(.*)" \d+', parsed, re.S)
                self.statements.append(match.group(1) if match else "<prepared>")
                parsed = ""
        self._file.close()
