import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core import broker


class Command(BaseCommand):
    help = "Create the pipeline's topics that do not exist yet (safe to run again)."

    def handle(self, *args, **options):
        # kafka-python logs every refused connection while it bootstraps: one line of ours says it all.
        kafka_logger = logging.getLogger("kafka")
        level = kafka_logger.level
        kafka_logger.setLevel(logging.CRITICAL)
        try:
            reachable = broker.broker_reachable(timeout_ms=5000)
        finally:
            kafka_logger.setLevel(level)
        if not reachable:
            raise CommandError(f"no Kafka broker answers at {','.join(settings.KAFKA_BOOTSTRAP_SERVERS)}: start one "
                               "(scripts/run-all.sh starts the development broker; or: scripts/manage dev_broker) "
                               "or change KAFKA_BOOTSTRAP_SERVERS.")
        created = broker.topics_ensure()
        for name in (broker.topic_name(t) for t in broker.ALL_TOPICS):
            self.stdout.write(f"{name}: {'created' if name in created else 'exists'}")
