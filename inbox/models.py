from django.db import models
from django.db.models.fields.json import KeyTransform
from django.utils import timezone


class NotificationKind(models.TextChoices):
    FOLLOW = "follow"
    MENTION = "mention"
    LIKE = "like"
    CUSTOM = "custom"
    OFFER = "offer"
    ALERT = "alert"
    REMINDER = "reminder"


USER_TO_USER_KINDS = (NotificationKind.FOLLOW, NotificationKind.MENTION, NotificationKind.LIKE, NotificationKind.CUSTOM)
CAMPAIGN_KINDS = (NotificationKind.OFFER, NotificationKind.ALERT, NotificationKind.REMINDER)

# A product's user id: 1-128 characters, no white space, no slash (it is a URL path segment).
RECIPIENT_ID_MAX_LENGTH = 128
RECIPIENT_ID_REGEX = r"^[^\s/]{1,128}$"


class RecipientQuerySet(models.QuerySet):
    def with_attribute(self, name: str, value) -> "RecipientQuerySet":
        """Recipients whose attributes[name] equals value (JSON equality: "5" is not 5).

        The key goes through KeyTransform, never into a lookup string, so no name can become a lookup.
        """
        return self.alias(_attribute=KeyTransform(name, "attributes")).filter(_attribute=value)

    def with_attribute_in(self, name: str, values: list) -> "RecipientQuerySet":
        return self.alias(_attribute=KeyTransform(name, "attributes")).filter(_attribute__in=values)


class Recipient(models.Model):
    """A user of the product that notifications are sent to, keyed by the product's own user id."""

    external_id = models.CharField("user id", max_length=RECIPIENT_ID_MAX_LENGTH, unique=True)
    email = models.EmailField(blank=True)
    push_endpoint = models.URLField(max_length=500, blank=True, help_text="Webhook that receives this recipient's notifications.")
    locale = models.CharField(max_length=16, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RecipientQuerySet.as_manager()

    def __str__(self) -> str:
        return self.external_id


class NotificationQuerySet(models.QuerySet):
    def for_recipient(self, recipient: Recipient) -> "NotificationQuerySet":
        return self.filter(recipient=recipient)


class Notification(models.Model):
    """One notification in one recipient's inbox, written by the worker."""

    # The id the API answered with ("<uuid>") or "<campaign id>:<recipient id>" for a campaign.
    notification_id = models.CharField(max_length=160, unique=True)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=16, choices=NotificationKind.choices)
    sender = models.CharField(max_length=RECIPIENT_ID_MAX_LENGTH, blank=True)
    title = models.CharField(max_length=200, blank=True)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    # Informational: no index and no database constraint (a per-row trigger on the hot insert path).
    campaign = models.ForeignKey(
        "campaigns.Campaign",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_index=False,
        db_constraint=False,
        related_name="+",
    )
    created_at = models.DateTimeField(help_text="When the API accepted the notification.")
    delivered_at = models.DateTimeField(default=timezone.now)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        indexes = [
            # The inbox page: one recipient, newest first (the cursor orders by -id).
            models.Index(fields=["recipient", "-id"], name="inbox_recipient_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.recipient_id}: {self.message[:40]}"
