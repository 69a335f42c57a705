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
