"""What the long-running commands (run_worker, run_dispatcher, run_relay) share at start."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from core import broker, metrics
from core.consumer import Heartbeat, StopFlag
from core.relay import relay_run

RELAY_JOIN_SECONDS = 8.0


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

    def relay_start(self, *, stop: StopFlag, sole_relay: bool,
                    on_topics_lost: Callable[[list[str]], object] | None = None) -> threading.Thread | None:
        """Run the outbox relay in a thread of this process (RELAY_EMBEDDED). On PostgreSQL every
        worker and dispatcher runs one and a lock lets one publish at a time; on SQLite (one machine)
        only the `sole_relay` process does. `on_topics_lost`: see `relay_run`."""
        if not settings.RELAY_EMBEDDED or (connection.vendor != "postgresql" and not sole_relay):
            return None
        thread = threading.Thread(target=relay_run, kwargs={"stop": stop, "on_topics_lost": on_topics_lost}, name="outbox-relay", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def relay_stop(thread: threading.Thread | None) -> None:
        if thread is not None:
            thread.join(timeout=RELAY_JOIN_SECONDS)
