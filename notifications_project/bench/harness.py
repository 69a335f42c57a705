"""What every benchmark needs: a database of its own, a broker, the pipeline's processes, results.

The benchmark database is `<DATABASE name>_bench` on the configured PostgreSQL server: created fresh,
migrated, dropped at the end. Nothing touches the configured database itself.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from core import broker
from core.devbroker import DevBroker
from core.processes import ProcessGroup, rss_bytes

logger = logging.getLogger("bench")


@dataclass
class Result:
    name: str
    figure: float
    unit: str
    ceiling: float | None = None  # what this machine can do at all, measured in the same run where possible
    ceiling_source: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return round(self.figure / self.ceiling, 3) if self.ceiling else None

    def as_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


class BenchEnvironment:
    def __init__(self, *, kafka: str | None = None, broker_needed: bool = True):
        self.kafka = kafka
        self.broker_needed = broker_needed
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.dev_broker: DevBroker | None = None
        self.processes: ProcessGroup | None = None
        self._original_db_name = settings.DATABASES["default"]["NAME"]
        self.db_name = f"{self._original_db_name}_bench"

    def __enter__(self) -> BenchEnvironment:
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            raise SystemExit("bench: benchmarks run on PostgreSQL; set DATABASE_URL=postgres://...")
        self._database_recreate()
        db = settings.DATABASES["default"]
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{self.db_name}",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }
        if self.broker_needed:
            if not self.kafka:
                self.dev_broker = DevBroker(self.workdir / "broker.log").start()
                self.kafka = self.dev_broker.bootstrap
            settings.KAFKA_BOOTSTRAP_SERVERS = [self.kafka]
            settings.KAFKA_TOPIC_PREFIX = f"bench-{uuid.uuid4().hex[:8]}."
            broker.topics_ensure()
            env.update(KAFKA_BOOTSTRAP_SERVERS=self.kafka, KAFKA_TOPIC_PREFIX=settings.KAFKA_TOPIC_PREFIX)
        self.processes = ProcessGroup(env, self.workdir)  # servers need no broker (bench inbox)
        logger.info("bench: database %s, broker %s, logs in %s", self.db_name, self.kafka or "none", self.workdir)
        return self

    def __exit__(self, *exc) -> None:
        if self.processes:
            self.processes.stop_all()
        if self.dev_broker:
            self.dev_broker.stop()
        connections["default"].close()
        self._admin_execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _admin_execute(self, sql: str) -> None:
        params = connections["default"].get_connection_params()
        params.pop("cursor_factory", None)
        params["dbname"] = "postgres"
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute(sql)

    def _database_recreate(self) -> None:
        connections["default"].close()
        self._admin_execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        self._admin_execute(f'CREATE DATABASE "{self.db_name}"')
        settings.DATABASES["default"]["NAME"] = self.db_name
        connections["default"].settings_dict["NAME"] = self.db_name
        call_command("migrate", verbosity=0)


class MemorySampler:
    """Samples the resident memory of processes while a benchmark runs."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.start = {name: rss_bytes(pid) for name, pid in pids.items()}
        self.peak = dict(self.start)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_bytes(pid))


def results_write(results: list[Result], path: str) -> None:
    Path(path).write_text(json.dumps([r.as_json() for r in results], indent=2))


def wait_for(predicate, *, timeout: float, interval: float = 0.02, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value
