"""The models of the shared bottom layer: the transactional outbox, dead letters, consumer heartbeats
and API idempotency keys. Every app above writes them; none of them points at an app's model."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class OutboxEventQuerySet(models.QuerySet):
    def pending(self) -> "OutboxEventQuerySet":
        """Not yet acknowledged by the broker."""
        return self.filter(published_at=None)


class OutboxEvent(models.Model):
    """An event the API accepted, for the relay to publish to Kafka.

    The API writes it in the same transaction as its own rows, so a request answered 2xx is never lost,
    even while Kafka is down. The relay publishes pending rows in id order and marks them published
    with the partition and offset the broker gave them; published rows are kept for
    RELAY_RETENTION_SECONDS, so that a broker that lost acknowledged records (a topic recreated) is
    sent them again, then purged (by the worker's retention thread).
    """

    topic = models.CharField(max_length=200, help_text="Logical topic name, without KAFKA_TOPIC_PREFIX.")
    key = models.CharField(max_length=200)
    payload = models.BinaryField()
    headers = models.JSONField(default=dict, blank=True, help_text="Record headers (string values).")
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    published_partition = models.IntegerField(null=True, blank=True)
    published_offset = models.BigIntegerField(null=True, blank=True)

    objects = OutboxEventQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["id"], condition=models.Q(published_at=None), name="core_outbox_pending"),
            models.Index(fields=["topic", "published_at"], name="core_outbox_published"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic} key={self.key}"


class DeadLetterReason(models.TextChoices):
    INVALID_PAYLOAD = "invalid payload"
    PERMANENT_FAILURE = "permanent failure"
    RETRIES_EXHAUSTED = "retries exhausted"
    # Handling the record raised an error that is not an outage (bad data, an encoding error, a bug):
    # that task alone is set aside, the rest of its batch delivered.
    PROCESSING_FAILED = "processing failed"


class DeadLetterStatus(models.TextChoices):
    DEAD = "dead"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class DeadLetter(models.Model):
    """A mirror of notifications.dlq: written in the same transaction as the outbox event that
    publishes the record, so the table and the topic hold the same dead letters."""

    reason = models.CharField(max_length=32, choices=DeadLetterReason.choices)
    error = models.TextField(blank=True)
    notification_id = models.CharField(max_length=160, blank=True)
    channel = models.CharField(max_length=16, blank=True)
    recipient_external_id = models.CharField("recipient", max_length=128, blank=True)
    campaign_id = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    original_topic = models.CharField(max_length=200)
    original_partition = models.IntegerField(null=True, blank=True)
    original_offset = models.BigIntegerField(null=True, blank=True)
    payload = models.BinaryField(help_text="The record as it was consumed (truncated to 512 KiB).")
    status = models.CharField(max_length=16, choices=DeadLetterStatus.choices, default=DeadLetterStatus.DEAD)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "-created_at"], name="core_dead_letter_status_newest")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.reason}: {self.notification_id or self.original_topic}"


class ConsumerHeartbeat(models.Model):
    """What each running consumer process last said of itself (for `manage.py status`)."""

    process = models.CharField(max_length=200, primary_key=True, help_text="name@host:pid")
    group = models.CharField(max_length=200)
    last_poll_at = models.DateTimeField()
    records_total = models.BigIntegerField(default=0)
    lag = models.JSONField(default=dict, help_text="Records behind the high watermark, per topic[partition].")

    def __str__(self) -> str:
        return self.process


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key and the answer its first request got (kept 24 hours)."""

    # "<user id>:<key>": keys are per client; one unique column is what arbitrates concurrent repeats.
    scoped_key = models.CharField(max_length=300, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.scoped_key


class BrokerTopic(models.Model):
    """The broker's id of each of our topics as the relays last saw it. A relay that starts against a
    broker whose topics have other ids knows the broker lost them while nothing ran (the development
    broker restarted with the whole stack), and publishes the retained events again, as it does for a
    loss it sees while running."""

    name = models.CharField(max_length=255, primary_key=True)
    topic_id = models.CharField(max_length=64)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name}: {self.topic_id}"


class ScheduledItem(models.Model):
    """Work that waits until `due_at`: channel sends and their retries (quiet hours and escalations:
    sends due later), held notifications, digest windows, erasures. `core.scheduler` schedules, releases and completes them."""

    kind = models.CharField(max_length=64, help_text="What releasing it does (a handler's name).")
    key = models.CharField(max_length=255, unique=True, help_text="One item per key: scheduling it again does nothing.")
    due_at = models.DateTimeField()
    lane = models.CharField(max_length=255, blank=True, help_text="What the items belong to: an endpoint "
                            "host (sends, held back together when it is busy), a recipient (held notifications).")
    payload = models.JSONField(default=dict, blank=True)
    releases = models.PositiveIntegerField(default=0, help_text="Times released; above 1, a holder died or gave it back.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["kind", "due_at"], name="core_scheduled_due")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} due {self.due_at:%Y-%m-%d %H:%M:%S}"
