from django.db import models
from django.utils import timezone


class DeliveryOutcome(models.TextChoices):
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"
    DIGESTED = "digested"  # folded into a digest (its reason names it): the digest is what is delivered


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


class DigestWindow(models.Model):
    """One recipient's digest of one kind under one key, open from its first event until `closes_at`:
    the scheduler closes it (delivery/digests.py) and queues the one notification that says its events.
    At most one window per (recipient, kind, key) is open at a time, whoever folds into it: the partial
    unique constraint decides, even when a rebalance briefly gives a recipient two workers. (Per kind:
    a like and a follow about the same post are two digests, each in its kind's words.)"""

    recipient_external_id = models.CharField("recipient", max_length=128)
    key = models.CharField(max_length=200)
    kind = models.CharField(max_length=64)
    opened_at = models.DateTimeField()
    closes_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient_external_id", "kind", "key"],
                                    condition=models.Q(closed_at__isnull=True), name="delivery_digest_one_open_window"),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_external_id} / {self.key} ({'closed' if self.closed_at else 'open'})"

    @property
    def notification_id(self) -> str:
        return digest_notification_id(self.pk)


def digest_notification_id(window_id: int) -> str:
    """The id of the notification a closed window becomes."""
    return f"digest:{window_id}"


def is_digest(notification_id: str) -> bool:
    return notification_id.startswith("digest:")


def digest_window_id(notification_id: str) -> int | None:
    """The window a digest's notification id names (None for any other id)."""
    window = notification_id.removeprefix("digest:")
    return int(window) if is_digest(notification_id) and window.isascii() and window.isdigit() else None


class DigestEvent(models.Model):
    """A notification folded into a digest window (its ledger row says `digested`)."""

    window = models.ForeignKey(DigestWindow, on_delete=models.CASCADE, related_name="events")
    notification_id = models.CharField(max_length=160, unique=True)
    sender = models.CharField(max_length=128)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.notification_id


class FrequencyCap(models.Model):
    """At most `max` deliveries on `channel` (of `kind`, or of every kind when null) per recipient in
    any `per_seconds` window, across every campaign and user-to-user notification. Enforced by the
    worker (delivery/caps.py); a delivery over a cap is not made on that channel."""

    channel = models.CharField(max_length=16, help_text="`in_app`, `email` or `webhook`.")
    kind = models.CharField(max_length=64, null=True, blank=True, help_text="Empty: every kind.")
    max = models.PositiveIntegerField(help_text="Deliveries allowed in the window (1 to 10,000).")
    per_seconds = models.PositiveIntegerField(help_text="The sliding window, in seconds (1 s to 30 days).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "frequency cap"

    def __str__(self) -> str:
        return f"{self.channel} {self.kind or 'every kind'}: {self.max} per {self.per_seconds} s"


class CapEvent(models.Model):
    """One delivery made on a capped channel (one a cap matched when it was made): what caps count.
    Written only under the recipient's and channel's CapGuard lock (delivery/caps.py); purged once
    older than the largest cap's window (delivery/retention.py)."""

    recipient_external_id = models.CharField("recipient", max_length=128)
    channel = models.CharField(max_length=16)
    kind = models.CharField(max_length=64)
    at = models.DateTimeField()
    notification_id = models.CharField(max_length=160)

    class Meta:
        indexes = [models.Index(fields=["recipient_external_id", "channel", "at"], name="delivery_capevent_window")]

    def __str__(self) -> str:
        return f"{self.notification_id} via {self.channel} at {self.at}"


class CapGuard(models.Model):
    """The row a worker locks (INSERT ... ON CONFLICT DO UPDATE) before it counts and writes the
    CapEvents of one recipient on one channel, so that two workers (a rebalance) take turns there."""

    recipient_external_id = models.CharField("recipient", max_length=128)
    channel = models.CharField(max_length=16)
    used_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["recipient_external_id", "channel"], name="delivery_cap_guard_once")]

    def __str__(self) -> str:
        return f"{self.recipient_external_id} / {self.channel}"
