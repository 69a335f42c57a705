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


class OutboxEvent(models.Model):
    """An event the API accepted, waiting for the relay to publish it to Kafka.

    The API writes it in the same transaction as its own rows, so a request answered 2xx is never lost,
    even while Kafka is down; the relay publishes rows in id order and deletes them once the broker
    has acknowledged them.
    """

    topic = models.CharField(max_length=200, help_text="Logical topic name, without KAFKA_TOPIC_PREFIX.")
    key = models.CharField(max_length=200)
    payload = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic} key={self.key}"
