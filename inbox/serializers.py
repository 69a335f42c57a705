from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from core.api import FieldsBuiltOnce
from core.fields import ChoiceWithListField, DataField, RecipientIdField
from core.messages import USER_TO_USER_KINDS, Channel, Kind
from core.webhook_targets import endpoint_host, endpoint_refusal, hosts_resolve
from inbox.models import Notification, Recipient
from inbox.services import SEND_AT_MAX_AHEAD

MESSAGE_MAX_LENGTH = 2000


class NotificationSendInput(FieldsBuiltOnce, serializers.Serializer):
    sender = RecipientIdField(help_text="The product user id of who caused the notification.")
    recipient = RecipientIdField(help_text="The product user id of who receives it.")
    kind = ChoiceWithListField(choices=[k.value for k in USER_TO_USER_KINDS])
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH)
    data = DataField(required=False, default=dict)
    send_at = serializers.DateTimeField(
        required=False, allow_null=True, default=None,
        help_text="Deliver at this time (ISO 8601 with an offset; at most a year ahead). Absent or past: now.")

    def validate_send_at(self, value):
        if value is not None and value > timezone.now() + SEND_AT_MAX_AHEAD:
            raise serializers.ValidationError("Must be at most a year ahead.")
        return value

    def validate(self, attrs):
        if attrs["sender"] == attrs["recipient"]:
            raise serializers.ValidationError({"recipient": ["Must differ from sender."]})
        return attrs


class SeedSendInput(FieldsBuiltOnce, serializers.Serializer):
    """The first seed's POST /send: fromID, toID, message (form-encoded or JSON)."""

    fromID = RecipientIdField()
    toID = RecipientIdField()
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH)

    def validate(self, attrs):
        if attrs["fromID"] == attrs["toID"]:
            raise serializers.ValidationError({"toID": ["Must differ from fromID."]})
        return attrs


class NotificationAcceptedOutput(serializers.Serializer):
    id = serializers.CharField(help_text="The notification's id; its inbox item carries the same id.")
    status = serializers.CharField(default="accepted")


class NotificationOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="notification_id")
    campaign = serializers.IntegerField(source="campaign_id", allow_null=True, read_only=True)

    class Meta:
        model = Notification
        fields = [
            "id", "kind", "sender", "title", "message", "data", "campaign", "created_at", "delivered_at",
            "seen_at", "read_at", "archived_at",
        ]

    def to_representation(self, instance):
        """What the fields above give (their schema and a test hold it to DRF's own output), written out:
        DRF's generic path cost about 40 µs per row, most of an inbox page's time."""
        tz = timezone.get_current_timezone()
        n = instance
        return {
            "id": str(n.notification_id), "kind": str(n.kind), "sender": str(n.sender), "title": str(n.title),
            "message": str(n.message), "data": n.data, "campaign": None if n.campaign_id is None else int(n.campaign_id),
            "created_at": _iso(n.created_at, tz), "delivered_at": _iso(n.delivered_at, tz), "seen_at": _iso(n.seen_at, tz),
            "read_at": _iso(n.read_at, tz), "archived_at": _iso(n.archived_at, tz),
        }


def _iso(value, tz) -> str | None:
    """DRF's DateTimeField output (ISO 8601 in the current time zone, UTC as Z)."""
    if value is None:
        return None
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ReadAllInput(serializers.Serializer):
    up_to = serializers.CharField(required=False, max_length=160,
                                  help_text="Mark only this notification and the older ones.")


class ReadAllOutput(serializers.Serializer):
    marked = serializers.IntegerField()


class UnreadCountInput(serializers.Serializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=10_000, help_text=(
        "Count at most this many (a badge's 99+): `count` is then at most `limit` and `capped` says "
        "whether there are more. Its cost stays that of `limit` rows, whatever the inbox holds."))


class UnreadCountOutput(serializers.Serializer):
    count = serializers.IntegerField()
    capped = serializers.BooleanField(help_text="True when there are more than `limit` (only with `limit`).")


class _StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            raise serializers.ValidationError("Must be true or false.")
        return data


class _OptOutsField(serializers.DictField):
    def __init__(self, *, keys: tuple[str, ...], **kwargs):
        self.valid_keys = keys
        super().__init__(child=_StrictBooleanField(), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        unknown = sorted(set(value) - set(self.valid_keys))
        if unknown:
            raise serializers.ValidationError(f"Unknown keys {unknown}; valid keys: {', '.join(self.valid_keys)}.")
        return value


class PreferenceInput(serializers.Serializer):
    kinds = _OptOutsField(keys=tuple(Kind.values), required=False, default=dict,
                          help_text='Per kind, false to opt out: {"like": false}.')
    channels = _OptOutsField(keys=tuple(Channel.values), required=False, default=dict,
                             help_text='Per channel, false to opt out: {"email": false}.')

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - {"kinds", "channels"}) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({"non_field_errors": [f"Unknown keys {unknown}; valid keys: kinds, channels."]})
        return attrs


class RecipientTokenOutput(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


RECIPIENTS_PER_REQUEST_MAX = 10_000
# The API waits this long at most for the DNS answers of one request's push endpoints.
PUSH_ENDPOINT_LOOKUP_SECONDS = 2.0


class PushEndpointField(serializers.URLField):
    """An http(s) URL without credentials that does not point inward (loopback, private, link-local,
    multicast, cloud metadata...; delivery/webhook_targets.py), unless WEBHOOK_ALLOW_PRIVATE_NETWORKS.
    A name is resolved here, and again by the worker at send time (what counts is where it points then)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=500, required=False, allow_blank=True, **kwargs)

    def to_internal_value(self, data):
        url = super().to_internal_value(data)
        if url:
            resolved = self.context.get("resolved_hosts")
            if resolved is None:
                host = endpoint_host(url)
                resolved = hosts_resolve({host} if host else set(), timeout=PUSH_ENDPOINT_LOOKUP_SECONDS)
            reason = endpoint_refusal(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS, resolved=resolved)
            if reason:
                raise serializers.ValidationError(
                    f"Refused: {reason}. Push endpoints must be http(s) URLs of public addresses, without credentials.")
        return url


class RecipientInputList(serializers.ListSerializer):
    """Many recipients: their endpoints' names are looked up together, once each, before validation."""

    def to_internal_value(self, data):
        if isinstance(data, list):
            hosts = {endpoint_host(e["push_endpoint"]) for e in data
                     if isinstance(e, dict) and isinstance(e.get("push_endpoint"), str)} - {None}
            self.context["resolved_hosts"] = hosts_resolve(hosts, timeout=PUSH_ENDPOINT_LOOKUP_SECONDS)
        return super().to_internal_value(data)


class RecipientInput(serializers.Serializer):
    id = RecipientIdField(help_text="The product's user id.")
    email = serializers.EmailField(required=False, allow_blank=True, help_text="Receives notifications by email.")
    push_endpoint = PushEndpointField(
        help_text="Receives notifications as an HTTP POST of JSON (webhook), signed with the secret this "
                  "request returns when it sets a new endpoint.")
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True)
    attributes = DataField(required=False, help_text="Free-form JSON object used by ATTRIBUTE segments.")

    class Meta:
        list_serializer_class = RecipientInputList


class RecipientUpdateInput(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True)
    push_endpoint = PushEndpointField()
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True)
    attributes = DataField(required=False, help_text="Replaces the recipient's attributes.")


class RecipientUpsertOutput(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    push_secrets = serializers.DictField(
        child=serializers.CharField(), required=False,
        help_text="Present when this request set or changed push endpoints: the signing secret (whsec_...) of "
                  "each such recipient, by user id. Shown only here: keep it with the endpoint.")


class RecipientOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id")

    class Meta:
        model = Recipient
        fields = ["id", "email", "push_endpoint", "locale", "attributes", "created_at", "updated_at"]


class RecipientUpdateOutput(RecipientOutput):
    # From the context, never from the row: a secret is shown only in the answer that made it.
    push_secret = serializers.SerializerMethodField(
        help_text="The new endpoint's signing secret (whsec_...) if this request changed the endpoint, else null.")

    class Meta(RecipientOutput.Meta):
        fields = [*RecipientOutput.Meta.fields, "push_secret"]

    def get_push_secret(self, recipient) -> str | None:
        return self.context.get("new_push_secret")


class PushSecretOutput(serializers.Serializer):
    push_secret = serializers.CharField(help_text="The new signing secret (whsec_...).")
    previous_valid_until = serializers.DateTimeField(
        allow_null=True, help_text="Until then the previous secret signs too (both signatures are sent).")
