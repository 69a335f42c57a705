"""What the long-running commands (run_worker, run_dispatcher, run_relay) share at start."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from delivery import broker, metrics
from delivery.consumer import Heartbeat, StopFlag


class PipelineCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--heartbeat-file", help="touched every second while alive (for healthchecks)")
        parser.add_argument("--metrics-port", type=int, default=settings.METRICS_PORT, help="serve Prometheus metrics")

    def pipeline_start(self, *, heartbeat_file: str | None, metrics_port: int) -> tuple[StopFlag, Heartbeat]:
        """Serve metrics, make sure the topics exist, and stop on SIGTERM/SIGINT (after the batch in hand)."""
        metrics.metrics_serve(metrics_port)
        broker.topics_ensure()
        stop = StopFlag()
        stop.install_signal_handlers()
        return stop, Heartbeat(heartbeat_file)
