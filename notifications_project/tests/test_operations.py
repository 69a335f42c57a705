import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import urllib3
from django.utils import timezone

from campaigns.factories import CampaignFactory
from campaigns.models import CampaignStatus
from conftest import wait_until
from core import broker
from core.devbroker import free_port
from core.messages import NotificationTask
from core.factories import DeadLetterFactory, OutboxEventFactory
from inbox.models import Recipient
from notifications_project import operations

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_healthz_is_public_and_says_nothing_more(anonymous_client):
    response = anonymous_client.get("/healthz")

    assert response.status_code == 200 and response.json() == {"status": "ok"}


def _timed_get(client, path: str):
    started = time.perf_counter()
    response = client.get(path)
    return response, time.perf_counter() - started


@pytest.mark.django_db
def test_readyz_depends_on_the_database_only_and_answers_fast_with_the_broker_up_or_down(
        anonymous_client, kafka, settings, monkeypatch):
    up, up_seconds = _timed_get(anonymous_client, "/readyz")
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]  # nothing listens there
    monkeypatch.setattr(broker, "KafkaAdminClient", None)  # no admin client, not even one that fails
    down = [_timed_get(anonymous_client, "/readyz") for _ in range(20)]

    assert (up.status_code, up.json()) == (200, {"status": "ready"}) and up_seconds < 0.1
    assert all((r.status_code, r.json()) == (200, {"status": "ready"}) for r, _ in down)
    assert max(seconds for _, seconds in down) < 0.1, [round(s, 3) for _, s in down]


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_is_unreachable(anonymous_client, monkeypatch):
    monkeypatch.setattr(operations, "database_reachable", lambda: False)

    response = anonymous_client.get("/readyz")

    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})


@pytest.mark.django_db
def test_metrics_report_the_broker_from_a_probe_in_the_background(anonymous_client, kafka, settings, monkeypatch):
    settings.METRICS_TOKEN = "scrape-secret"
    monkeypatch.setattr(operations, "broker_probe", operations.BrokerProbe(interval=0.2))

    def scrape() -> str:
        return anonymous_client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").content.decode()

    assert wait_until(lambda: "notifications_broker_reachable 1.0" in scrape(), what="the broker reported up")
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    started = time.perf_counter()
    scrape()
    assert time.perf_counter() - started < 0.5  # the scrape does not wait for the probe
    assert wait_until(lambda: "notifications_broker_reachable 0.0" in scrape(), what="the broker reported down")


def test_the_broker_probe_runs_one_at_a_time_and_at_most_once_per_interval(monkeypatch):
    calls, release = [], threading.Event()
    monkeypatch.setattr(operations, "broker_reachable", lambda: calls.append(1) or release.wait(5) or True)
    probe = operations.BrokerProbe(interval=60)

    values = [probe.value() for _ in range(50)]
    release.set()
    wait_until(lambda: probe.reachable, what="the probe's result")

    assert values == [None] * 50 and len(calls) == 1
    assert probe.value() is True and len(calls) == 1  # within the interval: the cached value


@pytest.mark.django_db
def test_metrics_needs_the_metrics_token(anonymous_client, service_client, settings):
    settings.METRICS_TOKEN = ""
    assert anonymous_client.get("/metrics").status_code == 404

    settings.METRICS_TOKEN = "scrape-secret"
    assert anonymous_client.get("/metrics").status_code == 401
    assert service_client.get("/metrics").status_code == 401  # an API token is not the metrics token

    OutboxEventFactory()
    DeadLetterFactory(invalid_payload=True)
    CampaignFactory(status=CampaignStatus.DISPATCHING)
    CampaignFactory(status=CampaignStatus.SCHEDULED)  # held until its send_at: not completed either
    CampaignFactory(status=CampaignStatus.COMPLETED)
    body = anonymous_client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").content.decode()

    assert "notifications_outbox_backlog 1.0" in body
    assert 'notifications_dead_letters_waiting{reason="invalid payload"} 1.0' in body
    assert "notifications_campaigns_in_flight 2.0" in body


def _scrape(port: int) -> str:
    try:
        return urllib3.PoolManager(retries=False).request("GET", f"http://127.0.0.1:{port}/metrics").data.decode()
    except urllib3.exceptions.HTTPError:
        return ""  # the worker is not serving yet


def _metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # exposition order
    match = re.search(rf"^{name}\{{{wanted}\}} (\S+)$", text, re.M) if labels else re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.pipeline
def test_worker_metrics_count_delivered_retried_and_dead_lettered(stack, webhook_receiver):
    port = free_port()
    Recipient.objects.create(external_id="hook", push_endpoint=f"{webhook_receiver.url}/flaky")
    Recipient.objects.create(external_id="bad", push_endpoint=f"{webhook_receiver.url}/bad")
    stack.start("run_relay")
    stack.start("run_worker", "--metrics-port", str(port))
    tasks = [NotificationTask(notification_id=str(uuid.uuid4()), recipient=r, kind="like", message="m",
                              created_at=timezone.now().isoformat()) for r in ("hook", "bad", "plain")]
    producer = broker.producer_create()
    for task in tasks:
        producer.send(broker.topic_name(broker.NOTIFICATIONS_SEND), key=task.recipient.encode(), value=task.encode())
    producer.send(broker.topic_name(broker.NOTIFICATIONS_SEND), key=b"x", value=b"poison")
    producer.flush()
    producer.close()

    text = wait_until(lambda: (t := _scrape(port)) and _metric(t, "notifications_channel_attempts_total",
                                                               channel="webhook", result="sent") == 1 and t,
                      timeout=30, what="the flaky webhook's success in the metrics")

    assert _metric(text, "notifications_deliveries_total", outcome="delivered", kind="like") == 3
    assert _metric(text, "notifications_channel_attempts_total", channel="webhook", result="failed") == 3  # 2 flaky + 1 bad
    assert _metric(text, "notifications_dead_letters_total", reason="permanent failure", channel="webhook") == 1
    assert _metric(text, "notifications_dead_letters_total", reason="invalid payload", channel="none") == 1
    assert _metric(text, "notifications_records_invalid_total", process="worker") == 1
    assert "notifications_batch_seconds_bucket" in text and "notifications_consumer_lag" in text


@pytest.mark.pipeline
def test_status_shows_workers_outbox_dead_letters_and_campaigns(stack):
    stack.start("run_worker")
    DeadLetterFactory(reason="retries exhausted")
    CampaignFactory(title="Spring", status=CampaignStatus.DISPATCHED, targeted=10, delivered=4, skipped=1)
    wait_until(lambda: "polled" in _status(stack.env), timeout=30, what="the worker in the status")

    screen = _status(stack.env)

    assert re.search(r"worker@\S+ +\S+notification-workers +polled +\d+\.\d s ago", screen), screen
    assert "database: reachable   broker: reachable" in screen
    assert "Outbox backlog: 0 events" in screen
    assert "Dead letters waiting: retries exhausted: 1" in screen
    assert "Spring" in screen and "settled 5 of 10 targeted (50%)" in screen


def _status(env) -> str:
    return subprocess.run([sys.executable, "manage.py", "status"], cwd=BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=60).stdout


def test_json_logs_when_asked(tmp_path):
    env = {"ENV_FILE": "/dev/null", "SECRET_KEY": "a-long-enough-secret-key", "LOG_FORMAT": "json",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", "PATH": "/usr/bin:/bin"}
    code = ("import logging; logging.getLogger('delivery.worker').warning('dead letter', "
            "extra={'notification_id': 'n1', 'campaign_id': 7, 'recipient': 'r1'})")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)

    import json

    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert (line["message"], line["notification_id"], line["campaign_id"], line["recipient"]) == ("dead letter", "n1", 7, "r1")


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_an_unknown_api_route_is_a_json_404_whatever_the_method(method):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)  # as a browser or curl would meet it: no CSRF exemption
    body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
    response = getattr(client, method)("/api/v1/nothing-here/", **body)

    assert response.status_code == 404
    assert response.json() == {"detail": "No API route matches /api/v1/nothing-here/."}
