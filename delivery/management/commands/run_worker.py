import logging

from django.conf import settings
from django.core.management.base import CommandError

from delivery import broker
from delivery.commands import PipelineCommand
from delivery.consumer import BatchConsumer
from delivery.messages import ChannelRetry, NotificationTask
from delivery.worker import Worker

logger = logging.getLogger("delivery.worker")


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
        worker = Worker(stop=stop)
        relay = self.relay_start(stop=stop, sole_relay=True)
        logger.info("worker: consuming %s and %s as group %s", broker.topic_name(broker.NOTIFICATIONS_SEND),
                    broker.topic_name(broker.NOTIFICATIONS_RETRY), broker.group_name(group))
        try:
            BatchConsumer(
                name="worker",
                decoders={broker.NOTIFICATIONS_SEND: NotificationTask.decode, broker.NOTIFICATIONS_RETRY: ChannelRetry.decode},
                logical_group=group,
                handle_batch=worker.handle_batch,
                handle_invalid=worker.handle_invalid,
                handle_failed=worker.handle_failed,
                due_at=worker.due_at,
                max_poll_records=batch_size,
                stop=stop,
                heartbeat=heartbeat,
            ).run()
        finally:
            stop.set()  # the relay thread too, whatever ended the loop
            worker.close()
            self.relay_stop(relay)
        if worker.guard.message:
            raise CommandError(worker.guard.message)
