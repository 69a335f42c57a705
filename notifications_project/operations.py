"""Health, readiness and metrics of the API process, and the one-screen system status."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from campaigns.models import Campaign, CampaignStatus
from delivery.broker import broker_reachable
from delivery.models import DeadLetter, DeadLetterStatus, OutboxEvent


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
    """Database and broker reachable (unauthenticated; answers no internal detail)."""
    ready = database_reachable() and broker_reachable()
    return JsonResponse({"status": "ready" if ready else "unavailable"}, status=200 if ready else 503)


def system_figures() -> dict:
    """Outbox backlog, dead letters waiting by reason, campaigns in flight: read from the database."""
    in_flight = (CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED)
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
