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

from delivery.devbroker import DevBroker
from notifications_project.processes import ProcessGroup


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
    from delivery import broker

    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_bootstrap]
    settings.KAFKA_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:10]}."
    broker.topics_ensure()
    return settings


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
    running = ProcessGroup(env, tmp_path)
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
