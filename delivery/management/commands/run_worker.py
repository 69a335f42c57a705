import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from delivery import broker
from delivery.consumer import BatchConsumer, Heartbeat, StopFlag
from delivery.messages import NotificationTask
from delivery.services import deliveries_settle

logger = logging.getLogger("delivery.worker")


class Command(BaseCommand):
    help = "Consume notifications.send in the worker group and deliver each task into its recipient's inbox."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=settings.WORKER_BATCH_SIZE)
        parser.add_argument(
            "--group", default=broker.WORKER_GROUP, help="consumer group (prefixed); another group re-reads the topic"
        )

        parser.add_argument("--heartbeat-file", help="touched every second while alive (for healthchecks)")

    def handle(self, *args, batch_size: int, group: str, heartbeat_file: str | None, **options):
        broker.topics_ensure()
        stop = StopFlag()
        stop.install_signal_handlers()
        logger.info(
            "worker: consuming %s as group %s", broker.topic_name(broker.NOTIFICATIONS_SEND), broker.group_name(group)
        )
        BatchConsumer(
            name="worker",
            logical_topics=(broker.NOTIFICATIONS_SEND,),
            logical_group=group,
            decode=NotificationTask.decode,
            handle_batch=lambda tasks: deliveries_settle(tasks=tasks),
            max_poll_records=batch_size,
            stop=stop,
            heartbeat=Heartbeat(heartbeat_file),
        ).run()
