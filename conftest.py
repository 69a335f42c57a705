"""Shared fixtures: the real broker, a topic prefix per test, and the pipeline's processes.

Pipeline tests run the real `manage.py run_worker` / `run_relay` / `run_dispatcher` processes against
the real broker and the test database; nothing of Kafka or the ORM is mocked.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.devbroker import DevBroker
from core.processes import ProcessGroup


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


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A Tansu broker of our own on a free port for the whole session (or TEST_KAFKA_BOOTSTRAP_SERVERS)."""
    given = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with DevBroker(tmp_path_factory.mktemp("broker") / "broker.log") as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka(kafka_bootstrap, settings):
    """Point this test at the broker, under a topic prefix of its own, with the topics created."""
    from core import broker

    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_bootstrap]
    settings.KAFKA_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:10]}."
    broker.topics_ensure()
    return settings


TEST_PUSH_GATEWAY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def stack_env(*, bootstrap: str, prefix: str) -> dict[str, str]:
    """The environment of a pipeline process sharing this test's database, broker and topics."""
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "notifications_project.settings",
        "DATABASE_URL": database_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
        "RETRY_BACKOFF_BASE_SECONDS": "0.3",  # real backoff, shorter: the retry tests take seconds, not minutes
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the test receivers listen on 127.0.0.1
        "PUSH_GATEWAY_SECRET": TEST_PUSH_GATEWAY_SECRET,  # signs for PUSH_GATEWAY_URL when a test sets it
    }


@pytest.fixture
def stack(kafka, transactional_db, tmp_path, request):
    running = ProcessGroup(stack_env(bootstrap=",".join(kafka.KAFKA_BOOTSTRAP_SERVERS), prefix=kafka.KAFKA_TOPIC_PREFIX), tmp_path)
    yield running
    running.stop_all()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(running.logs())


class WebhookReceiver:
    """A local HTTP endpoint whose answer depends on the path: /ok, /down (503), /bad (400),
    /busy (429), /flaky (503 twice per notification, then 200), /sleep (200 after `sleep_seconds`)."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[tuple[str, str, bytes]] = []
        self.received: list[tuple[str, dict[str, str], bytes]] = []  # (path, headers, body) of each request
        self.down_paths: set[str] = {"/down"}
        self.sleep_seconds = 10.0
        self.active = self.max_active = 0  # requests being answered now, and the most at once
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key", "")
                receiver.received.append((self.path, dict(self.headers.items()), body))
                receiver.requests.append((self.path, key, body))
                seen = sum(1 for path, k, _ in receiver.requests if path == self.path and k == key)
                if self.path == "/sleep":
                    with lock:
                        receiver.active += 1
                        receiver.max_active = max(receiver.max_active, receiver.active)
                    time.sleep(receiver.sleep_seconds)
                    with lock:
                        receiver.active -= 1
                if self.path in receiver.down_paths:
                    status = 503
                elif self.path == "/bad":
                    status = 400
                elif self.path == "/flaky":
                    status = 503 if seen <= 2 else 200
                elif self.path == "/busy":
                    status = 429
                else:
                    status = 200
                self.send_response(status)
                if self.path == "/slow":  # answers after 2 s
                    time.sleep(2)
                if self.path == "/drip":  # a 200 whose body comes one byte a second, for a minute
                    self.send_header("Content-Length", "60")
                    self.end_headers()
                    for _ in range(60):
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(1)
                    return
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests_for(self, path: str) -> list[tuple[str, str, bytes]]:
        return [r for r in self.requests if r[0] == path]

    def received_for(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for p, headers, body in self.received if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # it listens on 127.0.0.1
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


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


@pytest.fixture(autouse=True)
def _kinds_and_templates_forgotten():
    """The per-process memory of registered kinds, compiled templates and frequency caps, which the test database's
    rollback would leave behind."""
    from delivery.caps import caps_forget
    from inbox.kinds import kinds_forget
    from inbox.templating import compiled_forget

    kinds_forget()
    compiled_forget()
    caps_forget()
    yield
    kinds_forget()
    compiled_forget()
    caps_forget()
