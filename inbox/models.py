import base64
import secrets

from django.db import models
from django.db.models import Value
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.messages import RECIPIENT_ID_MAX_LENGTH, Channel, Kind
from inbox.quiet_hours import timezone_validator

# PostgreSQL NOTIFY channels the stream servers LISTEN on (inbox/stream.py); SQLite has none.
# New inbox rows (a statement trigger, migration 0006):
NEW_NOTIFICATION_CHANNEL = "inbox_notification"
# A recipient key whose open streams are checked again at once (tokens revoked, recipient deleted):
STREAMS_RECHECK_CHANNEL = "inbox_recipient_streams"
# Read-state changes, pushed to the recipient's open streams as `event: state`:
STATE_CHANNEL = "inbox_state"


PUSH_SECRET_PREFIX = "whsec_"


def push_secret_new() -> str:
    """A Standard Webhooks signing secret: "whsec_" and 32 random bytes in base64."""
    return PUSH_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


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
    # Signs what goes to push_endpoint. Shown once: in the answer that set the endpoint or rotated it.
    # Rows inserted in bulk without one (the worker's new recipients, which have no endpoint) get "".
    push_secret = models.CharField(max_length=100, blank=True, default=push_secret_new, db_default="")
    # After a rotation the old secret still signs (beside the new one) until push_secret_previous_until.
    push_secret_previous = models.CharField(max_length=100, blank=True, default="", db_default="")
    push_secret_previous_until = models.DateTimeField(null=True, blank=True)
    locale = models.CharField(max_length=16, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Recipient tokens carry the recipient's key and this generation; revoking them adds one. A
    # recreated recipient has a new key, so the tokens of the deleted one stay dead. db_default:
    # the worker creates recipients with a raw INSERT.
    token_generation = models.IntegerField(default=0, db_default=0, editable=False)
    # IANA ("Europe/Berlin"); blank: DEFAULT_TIMEZONE. Its quiet hours are read in it. db_default: the
    # worker creates recipients with a raw INSERT. (Last: the name hides django.utils.timezone here.)
    timezone = models.CharField(max_length=64, blank=True, default="", db_default="", validators=[timezone_validator])

    objects = RecipientQuerySet.as_manager()

    def __str__(self) -> str:
        return self.external_id


class NotificationQuerySet(models.QuerySet):
    """Read-state verbs return the number of rows they changed."""

    def for_recipient(self, recipient: Recipient) -> "NotificationQuerySet":
        return self.filter(recipient=recipient)

    def unread(self) -> "NotificationQuerySet":
        return self.filter(read_at__isnull=True, archived_at__isnull=True)

    def unarchived(self) -> "NotificationQuerySet":
        return self.filter(archived_at__isnull=True)

    def archived(self) -> "NotificationQuerySet":
        return self.filter(archived_at__isnull=False)

    def mark_read(self) -> int:
        now = timezone.now()
        return self.filter(read_at__isnull=True).update(read_at=now, seen_at=Coalesce("seen_at", Value(now)))

    def mark_unread(self) -> int:
        return self.filter(read_at__isnull=False).update(read_at=None)

    def mark_seen(self) -> int:
        return self.filter(seen_at__isnull=True).update(seen_at=timezone.now())

    def archive(self) -> int:
        return self.filter(archived_at__isnull=True).update(archived_at=timezone.now())

    def unarchive(self) -> int:
        return self.filter(archived_at__isnull=False).update(archived_at=None)


class Notification(models.Model):
    """One notification in one recipient's inbox, written by the worker."""

    # The id the API answered with ("<uuid>") or "<campaign id>:<recipient id>" for a campaign.
    notification_id = models.CharField(max_length=160, unique=True)
    # No index of its own: (recipient, -id) below leads with it (one index fewer on the hot insert).
    # No constraint in the database either: its check locks the recipient's row for each inbox row
    # written (about a fifth of a campaign's insert). Deleting a recipient deletes its inbox here
    # (Django's CASCADE), and once more a while later (`recipient_delete`) for rows a worker wrote
    # in that same instant.
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="notifications", db_index=False,
                                  db_constraint=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    sender = models.CharField(max_length=RECIPIENT_ID_MAX_LENGTH, blank=True)
    title = models.CharField(max_length=200, blank=True)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    # The campaign it came from: an id, no relation (campaigns is a layer above the inbox), no index
    # and no constraint (a per-row trigger on the hot insert path).
    campaign_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(help_text="When the API accepted the notification.")
    delivered_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        indexes = [
            # The inbox page: one recipient, newest first (the cursor orders by -id).
            models.Index(fields=["recipient", "-id"], name="inbox_recipient_newest"),
            # Unread count and the unread filter: only the unread rows of a recipient, newest first.
            models.Index(
                fields=["recipient", "-id"],
                name="inbox_recipient_unread",
                condition=models.Q(read_at__isnull=True, archived_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.recipient_id}: {self.message[:40]}"


class Preference(models.Model):
    """A recipient's opt-outs: {"like": false} in kinds, {"email": false} in channels (keys: Kind and
    Channel values). Absent means on."""

    recipient = models.OneToOneField(Recipient, on_delete=models.CASCADE, primary_key=True, related_name="preference")
    kinds = models.JSONField(default=dict, blank=True)
    channels = models.JSONField(default=dict, blank=True)
    # {"start": "22:00", "end": "08:00"} in the recipient's time zone (inbox/quiet_hours.py); null: none.
    quiet_hours = models.JSONField(null=True, blank=True, default=None)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.recipient_id}"


# A subscription key (the API's "topic", named otherwise here so that it is never taken for a Kafka
# topic): letters, digits and `_ . : @ -`, up to 200 characters, such as "post:42".
SUBSCRIPTION_KEY_MAX_LENGTH = 200
SUBSCRIPTION_KEY_REGEX = r"^[A-Za-z0-9_.:@-]{1,200}$"


class Subscription(models.Model):
    """A recipient subscribed to a key: a notification or a campaign sent to the key reaches every
    subscriber (a campaign segment {"type": "TOPIC", "key": ...})."""

    key = models.CharField(max_length=SUBSCRIPTION_KEY_MAX_LENGTH)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="subscriptions", db_index=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Also the fan-out's path: a key's subscribers in recipient order (keyset pages).
            models.UniqueConstraint(fields=["key", "recipient"], name="subscription_once"),
        ]
        indexes = [models.Index(fields=["recipient", "key"], name="subscription_of_recipient")]

    def __str__(self) -> str:
        return f"{self.recipient_id} subscribed to {self.key}"


# A registered kind's name: lower case, digits, "_", "." or "-", at most 16 characters (the inbox's
# kind column).
KIND_NAME_MAX_LENGTH = 16
KIND_NAME_REGEX = r"^[a-z][a-z0-9_.-]{0,15}$"


class NotificationKind(models.Model):
    """A kind a service registered (POST /api/v1/kinds/), beside the built-in ones (core.messages.Kind).
    Never deleted: its name is in stored notifications, preferences and templates, and every API
    process remembers the kinds it has seen (inbox/kinds.py)."""

    name = models.CharField(max_length=KIND_NAME_MAX_LENGTH, unique=True)
    urgent = models.BooleanField(default=False, help_text="Urgent kinds are never held back (digests, quiet hours).")
    digest_window_seconds = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="A default digest: its notifications sent without a digest of their own are folded per "
                  "recipient under the kind's name for this many seconds. Empty: none.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.name


class Template(models.Model):
    """What a kind's notifications say on one channel in one locale: Liquid, parsed when saved
    (inbox/templating.py). `locale` is a BCP 47 tag in canonical case, or empty for the default."""

    kind = models.CharField(max_length=KIND_NAME_MAX_LENGTH)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    locale = models.CharField(max_length=16, blank=True, help_text="BCP 47 (de, de-AT); empty: the default.")
    title = models.TextField(blank=True, help_text="In-app and webhook.")
    body = models.TextField(blank=True, help_text="In-app and webhook.")
    subject = models.TextField(blank=True, help_text="Email.")
    text = models.TextField(blank=True, help_text="Email: the plain-text part.")
    html = models.TextField(blank=True, help_text="Email: the HTML part (optional).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "channel", "locale"], name="inbox_template_one_per_locale"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} / {self.channel} / {self.locale or 'default'}"

    @property
    def parts(self) -> dict[str, str]:
        return {"title": self.title, "body": self.body, "subject": self.subject, "text": self.text, "html": self.html}
