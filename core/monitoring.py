"""What the consume loops report, recorded: Prometheus metrics per batch, and the status row each
consumer process keeps for `manage.py status` (with lag gauges). Passed to BatchConsumer as its
`on_batch` and `on_status` callbacks, so the loop itself writes nothing."""

import contextlib

from django.db import DatabaseError
from django.utils import timezone

from core import metrics
from core.consumer import BatchStats, ConsumerStatus
from core.models import ConsumerHeartbeat


def batch_record(stats: BatchStats) -> None:
    metrics.BATCH_SECONDS.labels(stats.consumer).observe(stats.seconds)
    metrics.BATCH_SIZE.labels(stats.consumer).observe(stats.handled)
    if stats.invalid:
        metrics.RECORDS_INVALID.labels(stats.consumer).inc(stats.invalid)
    for topic, count in stats.records_per_topic.items():
        metrics.RECORDS_CONSUMED.labels(stats.consumer, topic).inc(count)


def status_record(status: ConsumerStatus) -> None:
    """The process's row in the status table (removed when it stops); best effort: an outage shows up
    elsewhere, and the loop must not stop for its status."""
    for (topic, partition), lag in status.lag.items():
        metrics.CONSUMER_LAG.labels(status.consumer, topic, partition).set(lag)
    with contextlib.suppress(DatabaseError):
        if status.stopped:
            ConsumerHeartbeat.objects.filter(process=status.process).delete()
            return
        ConsumerHeartbeat.objects.update_or_create(
            process=status.process,
            defaults={"group": status.group, "last_poll_at": timezone.now(), "records_total": status.records_total,
                      "lag": {f"{topic}[{partition}]": lag for (topic, partition), lag in status.lag.items()}},
        )


CALLBACKS = {"on_batch": batch_record, "on_status": status_record}
