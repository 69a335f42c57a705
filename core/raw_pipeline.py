"""The raw ceiling of the fan-out path, measured by the benchmarks in the same run: bare kafka-python
producing keyed JSON tasks in one process while this one consumes them in batches, upserts them into
a plain table (COPY into a temp table, INSERT ... ON CONFLICT DO NOTHING) and commits offsets. No Django
models, no ledger, no inbox: what this machine can do at all with the same parts."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import orjson
from django.conf import settings
from django.db import connection
from kafka import KafkaConsumer, KafkaProducer

from core import broker


def _produce(bootstrap: list[str], topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024)
    for i in range(count):
        key = f"r{i}"
        producer.send(topic, key=key.encode(), value=orjson.dumps({"v": 1, "id": f"raw:{key}", "recipient": key, "campaign": 1}))
    producer.flush()
    producer.close()


def raw_pipeline_rate(*, count: int) -> float:
    """Records per second from the first send to the last row committed."""
    topic = broker.topic_name(f"raw.{uuid.uuid4().hex[:6]}")
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
    admin.create_topics([NewTopic(topic, settings.KAFKA_PARTITIONS, 1)])
    admin.close()
    with connection.cursor() as cursor:
        cursor.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw (id text PRIMARY KEY, recipient text NOT NULL)")
        cursor.execute("TRUNCATE bench_raw")
    consumer = KafkaConsumer(
        topic, bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=f"raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=settings.KAFKA_FETCH_MAX_WAIT_MS,
        session_timeout_ms=settings.KAFKA_SESSION_TIMEOUT_MS, heartbeat_interval_ms=settings.KAFKA_HEARTBEAT_INTERVAL_MS,
        max_poll_records=5000, max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    while not consumer.assignment():  # join the group before the clock starts
        consumer.poll(timeout_ms=200)
    connection.close()  # the child must not share this connection
    producer = multiprocessing.get_context("fork").Process(
        target=_produce, args=(settings.KAFKA_BOOTSTRAP_SERVERS, topic, count))
    started = time.perf_counter()
    producer.start()
    stored = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor.connection
        while stored < count:
            batches = consumer.poll(timeout_ms=500)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            with raw.transaction(), raw.cursor() as c:
                c.execute("CREATE TEMP TABLE IF NOT EXISTS bench_raw_in (id text, recipient text) ON COMMIT DELETE ROWS")
                with c.copy("COPY bench_raw_in (id, recipient) FROM STDIN") as copy:
                    for record in records:
                        task = orjson.loads(record.value)
                        copy.write_row((task["id"], task["recipient"]))
                c.execute("INSERT INTO bench_raw SELECT * FROM bench_raw_in ON CONFLICT DO NOTHING")
                stored += c.rowcount
            consumer.commit()
    elapsed = time.perf_counter() - started
    producer.join()
    consumer.close()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_raw")
    return count / elapsed
