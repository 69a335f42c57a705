"""The peer of `bench fanout`: what a Django team would build instead, measured in the same run.

Celery on Redis, 2 prefork workers. A campaign is a row; submitting it is that INSERT and
`dispatch.delay(campaign_id)`. `dispatch` pages the recipients' directory (`inbox_recipient`, the
one the benchmark seeded) by keyset, 1,000 a page, and enqueues one `deliver_chunk` per page; each
`deliver_chunk` is one transaction of one `INSERT … SELECT FROM unnest(…) ON CONFLICT (campaign_id,
recipient_id) DO NOTHING` into an inbox-shaped table on the same PostgreSQL server. The clock runs
from the campaign's INSERT to the last chunk committed (each chunk adds the rows it inserted to a
Redis counter after its commit); the rows are then counted in PostgreSQL, and a count that is not
the directory's fails the benchmark.

Celery is a dependency of this benchmark only: nothing else imports this module (`.importlinter`
forbids `celery` and `redis` elsewhere), and `bench fanout` imports it only with `--peer`. The
worker is a real `celery worker` process, started and stopped through the benchmark's process
group; this module is also its app (`celery -A notifications_project.bench.peer_celery`), which
needs no Django: its tasks talk to PostgreSQL through psycopg, one connection per worker process.

Its tables are plain SQL created by the benchmark in the benchmark's own database (dropped with it):
they are not the project's, so no migration puts them in a real database.

Redis: `BENCH_PEER_BROKER_URL` (default redis://127.0.0.1:6379/7). Every run uses a queue, a
worker name and counter keys of its own, so runs that share a Redis neither see each other's tasks
nor need a flush; if nothing answers on a loopback URL and `redis-server` is installed, the
benchmark starts one on that port for the run.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import redis
from celery import Celery
from celery.signals import worker_process_init

logger = logging.getLogger("bench")

BROKER_URL = os.environ.get("BENCH_PEER_BROKER_URL", "redis://127.0.0.1:6379/7")
PAGE = 1000

app = Celery("bench_peer", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    task_default_queue=os.environ.get("BENCH_PEER_QUEUE", "bench-peer"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_peer_campaign (
    id bigserial PRIMARY KEY,
    title varchar(200) NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- What our worker writes per recipient, in one table: the inbox row's columns that a campaign fills,
-- its foreign key to the recipient and its newest-first index, with (campaign, recipient) unique as
-- the ledger's key.
CREATE TABLE IF NOT EXISTS bench_peer_inbox (
    id bigserial PRIMARY KEY,
    campaign_id bigint NOT NULL,
    recipient_id bigint NOT NULL REFERENCES inbox_recipient (id),
    kind varchar(16) NOT NULL,
    title varchar(200) NOT NULL,
    message text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    read_at timestamptz,
    UNIQUE (campaign_id, recipient_id)
);
CREATE INDEX IF NOT EXISTS bench_peer_inbox_newest ON bench_peer_inbox (recipient_id, id DESC);
"""

_state: dict = {}  # per worker process: its PostgreSQL connection and Redis client


def _database() -> psycopg.Connection:
    if "db" not in _state:
        _state["db"] = psycopg.connect(os.environ["DATABASE_URL"])
    return _state["db"]


def _counter() -> redis.Redis:
    if "redis" not in _state:
        _state["redis"] = redis.Redis.from_url(app.conf.broker_url)
    return _state["redis"]


def done_key(campaign_id: int) -> str:
    return f"{app.conf.task_default_queue}:done:{campaign_id}"


@worker_process_init.connect
def _connect(**_) -> None:
    """Each prefork child opens its connections before its first task, not during the measured run."""
    _state.clear()
    _database()
    _counter().ping()


@app.task
def dispatch(campaign_id: int) -> int:
    """One deliver_chunk per 1,000 recipients of the directory, paged by keyset on the primary key."""
    conn, last, pages = _database(), 0, 0
    while True:
        with conn.transaction():
            ids = [row[0] for row in conn.execute(
                "SELECT id FROM inbox_recipient WHERE id > %s ORDER BY id LIMIT %s", (last, PAGE))]
        if not ids:
            return pages
        deliver_chunk.delay(campaign_id, ids)
        last, pages = ids[-1], pages + 1


@app.task
def deliver_chunk(campaign_id: int, recipient_ids: list[int]) -> int:
    """One transaction, one statement; a chunk run twice inserts nothing the second time."""
    conn = _database()
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO bench_peer_inbox (campaign_id, recipient_id, kind, title, message, data, created_at)"
            " SELECT c.id, r, 'offer', c.title, c.body, '{}', c.created_at"
            " FROM bench_peer_campaign c, unnest(%s::bigint[]) AS r WHERE c.id = %s"
            " ON CONFLICT (campaign_id, recipient_id) DO NOTHING",
            (recipient_ids, campaign_id),
        ).rowcount
    _counter().incrby(done_key(campaign_id), inserted)
    return inserted


# The benchmark's side: run in the `bench` process, which starts the worker above as a subprocess.


def _redis_ensure(processes, url: str) -> None:
    """A Redis answering on url; one started for the run if nothing answers on a loopback port."""

    def answers() -> bool:
        try:
            return redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        except redis.RedisError:
            return False

    if answers():
        return
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or not shutil.which("redis-server"):
        raise SystemExit(f"bench: no Redis answers on {url} for the Celery peer (apt-get install redis-server)")
    logger.info("fanout peer: starting redis-server on port %d", parts.port or 6379)
    server = processes.start_program("redis-server", [
        "redis-server", "--port", str(parts.port or 6379), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    deadline = time.monotonic() + 15
    while not answers():
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: redis-server did not start:\n{processes.log_of(server)[-2000:]}")
        time.sleep(0.05)


def _wait_done(campaign_id: int, count: int, *, worker, processes, timeout: float) -> None:
    counter, key = _counter(), done_key(campaign_id)
    deadline = time.monotonic() + timeout
    while int(counter.get(key) or 0) < count:
        if worker.poll() is not None:
            raise SystemExit(f"bench: the Celery worker exited:\n{processes.log_of(worker)[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: the Celery peer inserted {int(counter.get(key) or 0)} of {count} rows in "
                             f"{timeout:.0f} s:\n{processes.log_of(worker)[-3000:]}")
        time.sleep(0.002)


def peer_run(processes, database, *, recipients: int) -> float:
    """Recipients per second of the Celery peer to every recipient of the directory, which must hold
    `recipients`. `processes`: the benchmark's ProcessGroup; `database`: a Django connection to the
    benchmark's database."""
    url = BROKER_URL
    queue = f"bench-peer-{uuid.uuid4().hex[:8]}"
    app.conf.update(broker_url=url, task_default_queue=queue)
    _redis_ensure(processes, url)
    with database.cursor() as cursor:
        cursor.execute(SCHEMA)
        cursor.execute("SELECT count(*) FROM inbox_recipient")
        directory = cursor.fetchone()[0]
    if directory != recipients:
        raise SystemExit(f"bench: the directory holds {directory} recipients, not {recipients}")

    node = f"{queue}@{socket.gethostname()}"
    worker = processes.start_program("celery-peer", [
        sys.executable, "-m", "celery", "-A", __name__, "worker", "--pool", "prefork", "--concurrency", "2",
        "--queues", queue, "--hostname", node, "--loglevel", "WARNING", "--without-mingle", "--without-gossip",
    ], env={"BENCH_PEER_BROKER_URL": url, "BENCH_PEER_QUEUE": queue})
    keys = [queue, f"_kombu.binding.{queue}"]
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[node], timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: the Celery worker did not start:\n{processes.log_of(worker)[-3000:]}")
        with psycopg.connect(**_connection_params(database), autocommit=True) as conn:
            # Warm-up: one chunk of one recipient, through the broker and a worker process.
            warm = conn.execute("INSERT INTO bench_peer_campaign (title, body) VALUES ('warm-up', 'b') RETURNING id").fetchone()[0]
            keys.append(done_key(warm))
            first = conn.execute("SELECT min(id) FROM inbox_recipient").fetchone()[0]
            deliver_chunk.delay(warm, [first])
            _wait_done(warm, 1, worker=worker, processes=processes, timeout=60)

            logger.info("fanout peer: Celery on Redis, 2 prefork workers, to %d recipients", recipients)
            started = time.perf_counter()
            campaign_id = conn.execute(
                "INSERT INTO bench_peer_campaign (title, body) VALUES ('Benchmark', 'b') RETURNING id").fetchone()[0]
            dispatch.delay(campaign_id)
            keys.append(done_key(campaign_id))
            _wait_done(campaign_id, recipients, worker=worker, processes=processes, timeout=max(120, recipients / 1000))
            elapsed = time.perf_counter() - started
            rows = conn.execute("SELECT count(*) FROM bench_peer_inbox WHERE campaign_id = %s", (campaign_id,)).fetchone()[0]
        if rows != recipients:
            raise SystemExit(f"bench: the Celery peer wrote {rows} rows for {recipients} recipients")
    finally:
        processes.stop(worker)
        _counter().delete(*keys)
    rate = recipients / elapsed
    logger.info("fanout peer: %d recipients in %.2f s: %.0f recipients/s", recipients, elapsed, rate)
    return rate


def _connection_params(database) -> dict:
    params = database.get_connection_params()
    params.pop("cursor_factory", None)
    return params
