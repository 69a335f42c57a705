import logging
import time

from django.db import InterfaceError, OperationalError, connection
from kafka.errors import KafkaError

from delivery import broker, metrics
from delivery.commands import PipelineCommand
from delivery.outbox import OutboxRelay

logger = logging.getLogger("delivery.relay")


def _topics_ensure_quietly() -> None:
    try:
        created = broker.topics_ensure()
    except KafkaError:
        return
    if created:
        logger.warning("relay: the broker had lost topics; created %s again", ", ".join(created))


def _producer_reset_quietly(relay: OutboxRelay) -> None:
    try:
        relay.producer_reset()
    except KafkaError as exc:
        logger.warning("relay: cannot reach the broker yet (%s)", exc)


class Command(PipelineCommand):
    help = "Publish the API's outbox to Kafka (run exactly one per stack: it keeps each key's order)."

    def handle(self, *args, heartbeat_file: str | None, metrics_port: int, **options):
        stop, heartbeat = self.pipeline_start(heartbeat_file=heartbeat_file, metrics_port=metrics_port)
        relay = OutboxRelay()
        published = logged = 0
        last_log = last_backlog = time.monotonic()
        delay = 0.5
        logger.info("relay: publishing the outbox to %s", ", ".join(broker.topic_name(t) for t in broker.ALL_TOPICS))
        try:
            while not stop.is_set():
                heartbeat.beat()
                try:
                    relay.wait_for_events(timeout=1.0)
                    while not stop.is_set() and (count := relay.publish_pending()):
                        published += count
                        metrics.OUTBOX_PUBLISHED.inc(count)
                    delay = 0.5
                    if time.monotonic() - last_backlog >= 5:
                        metrics.OUTBOX_BACKLOG.set(relay.backlog())
                        last_backlog = time.monotonic()
                except (OperationalError, InterfaceError, KafkaError) as exc:
                    logger.warning("relay: %s; retrying in %.1f s (nothing is lost: events stay in the outbox)", exc, delay)
                    connection.close()
                    stop.wait(delay)
                    delay = min(delay * 2, 15.0)
                    if isinstance(exc, KafkaError):
                        _topics_ensure_quietly()  # a broker that restarted empty has lost its topics
                        _producer_reset_quietly(relay)
                if time.monotonic() - last_log >= 5 and published != logged:
                    logger.info("relay: %d events published (%d in the last %.0f s)",
                                published, published - logged, time.monotonic() - last_log)
                    last_log, logged = time.monotonic(), published
        finally:
            relay.close()
            logger.info("relay: stopped after publishing %d events", published)
