"""Health, readiness and metrics of the API process, and the one-screen system status."""

from __future__ import annotations

import hmac
import math
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from campaigns.models import Campaign, CampaignStatus
from core.broker import broker_reachable
from core.models import DeadLetter, DeadLetterStatus, OutboxEvent


@require_GET
def healthz(request):
    """The process is alive (unauthenticated, tells nothing about the system)."""
    return JsonResponse({"status": "ok"})


def database_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        connection.close()
        return False


@require_GET
def readyz(request):
    """The database is reachable (unauthenticated; answers no internal detail).

    Only the database: the API never talks to Kafka (it writes the outbox), so a broker outage must
    not take it out of a load balancer. The broker's reachability is in `manage.py status` and in
    /metrics (`notifications_broker_reachable`, from `BrokerProbe`).
    """
    ready = database_reachable()
    return JsonResponse({"status": "ready" if ready else "unavailable"}, status=200 if ready else 503)


class BrokerProbe:
    """The broker's reachability for /metrics, probed at most once per `interval` seconds per process,
    in a background thread: no request waits for Kafka, and scrapes never stack admin clients."""

    def __init__(self, interval: float = 30.0):
        self.interval = interval
        self.reachable: bool | None = None  # None until the first probe has finished
        self._probed_at = -math.inf
        self._running = threading.Lock()

    def value(self) -> bool | None:
        if time.monotonic() - self._probed_at >= self.interval and self._running.acquire(blocking=False):
            self._probed_at = time.monotonic()
            threading.Thread(target=self._probe, name="broker-probe", daemon=True).start()
        return self.reachable

    def _probe(self) -> None:
        try:
            self.reachable = broker_reachable()
        finally:
            self._running.release()


broker_probe = BrokerProbe()


def system_figures() -> dict:
    """Outbox backlog, dead letters waiting by reason, campaigns in flight: read from the database."""
    in_flight = (CampaignStatus.SCHEDULED, CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED)
    return {
        "outbox_backlog": OutboxEvent.objects.pending().count(),
        "dead_letters": dict(
            DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).values_list("reason").annotate(n=Count("id"))
        ),
        "campaigns_in_flight": list(Campaign.objects.filter(status__in=in_flight).order_by("id")),
    }


class _SystemCollector:
    def collect(self):
        figures = system_figures()
        backlog = GaugeMetricFamily("notifications_outbox_backlog", "Outbox events waiting to be published")
        backlog.add_metric([], figures["outbox_backlog"])
        letters = GaugeMetricFamily("notifications_dead_letters_waiting", "Dead letters neither replayed nor discarded",
                                    labels=["reason"])
        for reason, count in figures["dead_letters"].items():
            letters.add_metric([reason], count)
        campaigns = GaugeMetricFamily("notifications_campaigns_in_flight", "Campaigns not yet completed or cancelled")
        campaigns.add_metric([], len(figures["campaigns_in_flight"]))
        yield from (backlog, letters, campaigns)
        reachable = broker_probe.value()
        if reachable is not None:
            broker = GaugeMetricFamily("notifications_broker_reachable",
                                       "1 when the broker answered the API process's last probe (every 30 s)")
            broker.add_metric([], int(reachable))
            yield broker


@require_GET
def metrics(request):
    """Prometheus metrics of the system, for a scraper holding METRICS_TOKEN (404 while it is unset)."""
    expected = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not expected:
        return JsonResponse({"detail": "Not found."}, status=404)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return JsonResponse({"detail": "Send Authorization: Bearer <METRICS_TOKEN>."}, status=401)
    registry = CollectorRegistry()
    registry.register(_SystemCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
