from django.db import models
from django.utils import timezone


class DeliveryOutcome(models.TextChoices):
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"


class Delivery(models.Model):
    """The dedup ledger: one row per notification id the worker has ever settled.

    Its primary key is what makes delivery exactly-once in effect: the worker claims the row with
    INSERT ... ON CONFLICT DO NOTHING in the same transaction as the inbox row, so a task seen twice
    (redelivery, restart, a redone fan-out) finds its row taken and changes nothing. It has no foreign
    keys, so it outlives the recipients and campaigns it names.
    """

    notification_id = models.CharField(max_length=160, primary_key=True)
    recipient_external_id = models.CharField("recipient", max_length=128)
    campaign_id = models.BigIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=DeliveryOutcome.choices)
    reason = models.CharField(max_length=200, blank=True)
    settled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "deliveries (dedup ledger)"

    def __str__(self) -> str:
        return f"{self.notification_id}: {self.outcome}"


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
    sent them again, then purged.
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
            models.Index(fields=["id"], condition=models.Q(published_at=None), name="outbox_pending"),
            models.Index(fields=["topic", "published_at"], name="outbox_published"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic} key={self.key}"


class ChannelDeliveryStatus(models.TextChoices):
    PENDING = "pending"
    RETRYING = "retrying"
    SENT = "sent"
    SKIPPED = "skipped"
    DEAD = "dead"


class ChannelDelivery(models.Model):
    """The ledger of one external channel (webhook, email) for one notification.

    Written as `pending` in the same transaction that claims the notification, so a worker killed
    before the send finds it on redelivery; a send is attempted only while the row is pending or
    retrying with the attempt number the retry record carries, so no attempt is made twice on purpose.
    External receivers get the notification id (header `Idempotency-Key`) to drop the rare repeat
    that a crash between a send and its record can cause.
    """

    notification_id = models.CharField(max_length=160)
    channel = models.CharField(max_length=16)
    recipient_external_id = models.CharField("recipient", max_length=128)
    campaign_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=ChannelDeliveryStatus.choices, default=ChannelDeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # What to send (the recipient's address is read afresh at each attempt): retries need no inbox row,
    # which a recipient who opted out of in-app notifications does not have.
    content = models.JSONField(default=dict, blank=True)
    # Where the task was read: the provenance its dead letter carries.
    origin_topic = models.CharField(max_length=200, blank=True)
    origin_partition = models.IntegerField(null=True, blank=True)
    origin_offset = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notification_id", "channel"], name="channel_delivery_once")]
        verbose_name_plural = "channel deliveries"

    def __str__(self) -> str:
        return f"{self.notification_id} via {self.channel}: {self.status}"


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
        indexes = [models.Index(fields=["status", "-created_at"], name="dead_letter_status_newest")]

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
