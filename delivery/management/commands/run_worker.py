from django.conf import settings
from django.core.management.base import CommandError

from campaigns.services import campaigns_recover_lost_topics
from core import broker
from core.commands import PipelineCommand
from delivery.retention import retention_start, retention_stop
from delivery.worker import worker_run


class Command(PipelineCommand):
    help = "Deliver notifications.send (and due notifications.retry) into inboxes and external channels."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--batch-size", type=int, default=settings.WORKER_BATCH_SIZE)
        parser.add_argument(
            "--group", default=broker.WORKER_GROUP, help="consumer group (prefixed); another group re-reads the topic"
        )

    def handle(self, *args, batch_size: int, group: str, heartbeat_file: str | None, metrics_port: int, **options):
        stop, heartbeat = self.pipeline_start(heartbeat_file=heartbeat_file, metrics_port=metrics_port)
        relay = self.relay_start(stop=stop, sole_relay=True, on_topics_lost=campaigns_recover_lost_topics)
        purge = retention_start(stop=stop)  # a thread of its own: never holds up the poll loop
        try:
            guard_message = worker_run(stop=stop, heartbeat=heartbeat, batch_size=batch_size, group=group)
        finally:
            stop.set()
            self.relay_stop(relay)
            retention_stop(purge)
        if guard_message:
            raise CommandError(guard_message)
