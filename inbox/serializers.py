from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from core import clock
from core.api import FieldsBuiltOnce
from core.fields import AwareDateTimeField, ChoiceWithListField, DataField, RecipientIdField, StrictIntegerField
from core.messages import (
    DIGEST_KEY_MAX_LENGTH,
    DIGEST_WINDOW_MAX_SECONDS,
    DIGEST_WINDOW_MIN_SECONDS,
    ESCALATE_AFTER_MAX_SECONDS,
    ESCALATE_AFTER_MIN_SECONDS,
    ESCALATE_CHANNELS,
    ESCALATE_UNLESS,
    Channel,
    DigestSpec,
    EscalationSpec,
    Kind,
)
from core.webhook_targets import endpoint_host, endpoint_refusal, hosts_resolve
from inbox import kinds as kind_registry
from inbox import quiet_hours as quiet
from inbox import templating
from inbox.models import (
    KIND_NAME_MAX_LENGTH,
    KIND_NAME_REGEX,
    Notification,
    NotificationKind,
    Recipient,
    Subscription,
    Template,
)
from inbox.services import DELAY_MAX, SEND_AT_MAX_AHEAD, SEND_AT_MAX_PAST
from inbox.subscriptions import SUBSCRIBERS_PER_REQUEST_MAX

MESSAGE_MAX_LENGTH = 2000


class KindField(serializers.CharField):
    """A kind that exists: built in or registered (inbox/kinds.py: no query for a kind this process knows).
    `campaign_kinds=False` refuses the campaign kinds (offer, alert, reminder)."""

    def __init__(self, *, campaign_kinds: bool = True, **kwargs):
        self.campaign_kinds = campaign_kinds
        kwargs.setdefault("help_text", f"One of {kind_registry.kind_choices_text(campaign_kinds=campaign_kinds)}.")
        super().__init__(max_length=64, trim_whitespace=False, **kwargs)  # " like" is not a kind

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not kind_registry.kind_exists(value, campaign_kinds=self.campaign_kinds):
            raise serializers.ValidationError(
                f'"{value}" is not a valid choice; valid choices: '
                f"{kind_registry.kind_choices_text(campaign_kinds=self.campaign_kinds)}.")
        return value


class DigestInput(serializers.Serializer):
    key = serializers.CharField(
        max_length=DIGEST_KEY_MAX_LENGTH, trim_whitespace=False,
        help_text="What the notifications are about (\"post:42\"): one digest per recipient and key at a time.")
    window_seconds = serializers.IntegerField(
        min_value=DIGEST_WINDOW_MIN_SECONDS, max_value=DIGEST_WINDOW_MAX_SECONDS,
        help_text="How long the digest gathers from its first notification: 1 s to 7 days.")

    def validate_key(self, value):
        if "\x00" in value:
            raise serializers.ValidationError("Must not contain NUL.")
        return value

    def to_internal_value(self, data):
        return DigestSpec(**super().to_internal_value(data))


class EscalationInput(serializers.Serializer):
    after_seconds = StrictIntegerField(
        min_value=ESCALATE_AFTER_MIN_SECONDS, max_value=ESCALATE_AFTER_MAX_SECONDS,
        help_text="How long after it lands in the inbox: 1 s to 30 days.")
    channels = serializers.ListField(
        child=ChoiceWithListField(choices=[(c, c) for c in ESCALATE_CHANNELS]), min_length=1,
        max_length=10, help_text="The external channels held until then: email, webhook.")
    unless = ChoiceWithListField(choices=[(u, u) for u in ESCALATE_UNLESS], required=False, default="read",
                                 help_text="Not sent if by then the notification was read (default) or seen.")

    def to_internal_value(self, data):
        if isinstance(data, dict) and (unknown := sorted(set(data) - {"after_seconds", "channels", "unless"})):
            raise serializers.ValidationError({"non_field_errors": [
                f"Unknown keys {unknown}; valid keys: after_seconds, channels, unless."]})
        value = super().to_internal_value(data)
        return EscalationSpec(after_seconds=value["after_seconds"], channels=tuple(dict.fromkeys(value["channels"])),
                              unless=value["unless"])


class NotificationSendInput(FieldsBuiltOnce, serializers.Serializer):
    sender = RecipientIdField(help_text="The product user id of who caused the notification.")
    recipient = RecipientIdField(help_text="The product user id of who receives it.")
    kind = KindField(campaign_kinds=False)
    message = serializers.CharField(
        max_length=MESSAGE_MAX_LENGTH, required=False,
        help_text="The text, used as given. Absent: rendered by the worker from the kind's template in the "
                  "recipient's locale (de-AT, then de, then the default); the kind must have a default in_app template.")
    data = DataField(required=False, default=dict)
    send_at = AwareDateTimeField(
        required=False, allow_null=True, default=None,
        help_text="Deliver at this time (ISO 8601 with an offset; at most a year ahead, at most a day in the past). "
                  "Absent, null or a little in the past (clock skew): now. Not with delay_seconds.")
    delay_seconds = StrictIntegerField(
        required=False, min_value=1, max_value=int(DELAY_MAX.total_seconds()),
        help_text="Deliver this many seconds from now (1 to 7776000: 90 days). Not with send_at.")
    expires_at = AwareDateTimeField(
        required=False, allow_null=True, default=None,
        help_text="Never deliver it after this time (ISO 8601 with an offset; in the future, and after send_at or "
                  "the delay): still held, waiting or retrying then, it is dropped as `expired`.")
    digest = DigestInput(
        required=False, allow_null=True, default=None,
        help_text="Fold it into the recipient's digest: the first notification with this key opens a window, "
                  "the ones until it closes are folded in, and then one notification says them all "
                  "(data.digest: count, actors, events), in the kind's template or \"Tito and 3 others liked your post\".")
    escalate = EscalationInput(
        required=False, allow_null=True, default=None,
        help_text="The in-app notification lands at once; the named channels are sent only `after_seconds` "
                  "later, and only if it is still unread (or unseen) then: reading it first cancels them.")

    def validate_send_at(self, value):
        return send_at_bounded(value)

    def validate_expires_at(self, value):
        if value is not None and value <= clock.now():
            raise serializers.ValidationError("Must be in the future.")
        return value

    def validate(self, attrs):
        if attrs["sender"] == attrs["recipient"]:
            raise serializers.ValidationError({"recipient": ["Must differ from sender."]})
        if attrs.get("escalate") is not None and attrs.get("digest") is not None:
            raise serializers.ValidationError({"escalate": ["A notification folded into a digest is not escalated: "
                                                            "send it without `digest`."]})
        delay = attrs.pop("delay_seconds", None)
        if delay is not None:
            if attrs["send_at"] is not None:
                both = ["Give send_at or delay_seconds, not both."]
                raise serializers.ValidationError({"send_at": both, "delay_seconds": both})
            attrs["send_at"] = clock.now() + timedelta(seconds=delay)
        expires_at, send_at = attrs["expires_at"], attrs["send_at"]
        if expires_at is not None and send_at is not None and expires_at <= send_at:
            raise serializers.ValidationError({"expires_at": [
                f"Must be after {'send_at' if delay is None else 'the delay (delay_seconds)'}: it would expire "
                "before it is sent."]})
        return attrs


def send_at_bounded(value):
    """A `send_at`'s bounds (a notification's, a campaign's): at most a year ahead, at most a day in
    the past (a little in the past, clock skew, is sent now); None passes."""
    if value is not None and value > clock.now() + SEND_AT_MAX_AHEAD:
        raise serializers.ValidationError("Must be at most a year ahead.")
    if value is not None and value < clock.now() - SEND_AT_MAX_PAST:
        raise serializers.ValidationError("Must be at most a day in the past (a little in the past is sent now).")
    return value


class SeedSendInput(FieldsBuiltOnce, serializers.Serializer):
    """The first seed's POST /send: fromID, toID, message (form-encoded or JSON), and an optional kind
    (the seed tells follows, mentions and likes apart only in its message's words; we never guess from them)."""

    fromID = RecipientIdField()
    toID = RecipientIdField()
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH)
    kind = KindField(campaign_kinds=False, required=False, default=Kind.CUSTOM.value,
                     help_text="follow, mention, like, custom (the default) or a registered kind.")

    def to_internal_value(self, data):
        if hasattr(data, "getlist") and data.get("kind") == "":  # an empty form field is no kind: the default
            data = data.copy()
            data.pop("kind")
        return super().to_internal_value(data)

    def validate(self, attrs):
        if attrs["fromID"] == attrs["toID"]:
            raise serializers.ValidationError({"toID": ["Must differ from fromID."]})
        return attrs


class NotificationAcceptedOutput(serializers.Serializer):
    id = serializers.CharField(help_text="The notification's id; its inbox item carries the same id.")
    status = serializers.CharField(
        default="accepted", help_text="`accepted` (queued now), or `scheduled` (held until its send_at or delay: "
                                      "DELETE /api/v1/notifications/<id>/ cancels it until then).")


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
    def __init__(self, *, keys: tuple[str, ...], kinds: bool = False, **kwargs):
        self.valid_keys = keys
        self.kinds = kinds  # any kind that exists (registered ones too)
        super().__init__(child=_StrictBooleanField(), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if self.kinds:
            unknown = sorted(k for k in value if not kind_registry.kind_exists(k))
            valid = kind_registry.kind_choices_text()
        else:
            unknown, valid = sorted(set(value) - set(self.valid_keys)), ", ".join(self.valid_keys)
        if unknown:
            raise serializers.ValidationError(f"Unknown keys {unknown}; valid keys: {valid}.")
        return value


class QuietHoursInput(serializers.Serializer):
    start = serializers.CharField(help_text='HH:MM, 24 h ("22:00"), in the recipient\'s time zone.')
    end = serializers.CharField(help_text='HH:MM, 24 h ("08:00"); before `start`: the window crosses midnight.')

    def validate_start(self, value):
        return _hh_mm(value)

    def validate_end(self, value):
        return _hh_mm(value)

    def validate(self, attrs):
        if attrs["start"] == attrs["end"]:
            raise serializers.ValidationError({"end": ["Must differ from start."]})
        return attrs

    def to_internal_value(self, data):
        if isinstance(data, dict) and (unknown := sorted(set(data) - {"start", "end"})):
            raise serializers.ValidationError({"non_field_errors": [f"Unknown keys {unknown}; valid keys: start, end."]})
        return super().to_internal_value(data)


def _hh_mm(value: str) -> str:
    try:
        quiet.parse_hh_mm(value)
    except ValueError as exc:
        raise serializers.ValidationError(f"{str(exc).capitalize()}.") from None
    return value


class TimezoneField(serializers.CharField):
    """An IANA time zone name ("Europe/Berlin"); blank: DEFAULT_TIMEZONE."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "IANA time zone (\"Europe/Berlin\"); blank: the default (DEFAULT_TIMEZONE). "
                                       "Quiet hours are read in it.")
        super().__init__(max_length=quiet.TIMEZONE_MAX_LENGTH, required=False, allow_blank=True, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value and not quiet.timezone_valid(value):
            raise serializers.ValidationError(f'"{value[:64]}" is not an IANA time zone (such as "Europe/Berlin").')
        return value


class PreferenceInput(serializers.Serializer):
    kinds = _OptOutsField(keys=tuple(Kind.values), kinds=True, required=False, default=dict,
                          help_text='Per kind (built in or registered), false to opt out: {"like": false}.')
    channels = _OptOutsField(keys=tuple(Channel.values), required=False, default=dict,
                             help_text='Per channel, false to opt out: {"email": false}.')
    quiet_hours = QuietHoursInput(
        required=False, allow_null=True, default=None,
        help_text="Email and webhooks are held during them and sent when they end (in-app lands at once; "
                  "urgent kinds are never held). Null or absent: none.")

    def validate(self, attrs):
        valid = ("kinds", "channels", "quiet_hours")
        unknown = sorted(set(self.initial_data) - set(valid)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({"non_field_errors": [
                f"Unknown keys {unknown}; valid keys: {', '.join(valid)}."]})
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
    timezone = TimezoneField()
    attributes = DataField(required=False, help_text="Free-form JSON object used by ATTRIBUTE segments.")

    class Meta:
        list_serializer_class = RecipientInputList


class RecipientUpdateInput(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True)
    push_endpoint = PushEndpointField()
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True)
    timezone = TimezoneField()
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
        fields = ["id", "email", "push_endpoint", "locale", "timezone", "attributes", "created_at", "updated_at"]


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


class SubscribersInput(FieldsBuiltOnce, serializers.Serializer):
    recipients = serializers.ListField(
        child=RecipientIdField(), min_length=1, max_length=SUBSCRIBERS_PER_REQUEST_MAX,
        help_text=f"User ids (1 to {SUBSCRIBERS_PER_REQUEST_MAX}); unknown ones are added to the directory when subscribed.")


class SubscribersAddedOutput(serializers.Serializer):
    added = serializers.IntegerField(help_text="How many were not subscribed yet.")


class SubscribersRemovedOutput(serializers.Serializer):
    removed = serializers.IntegerField(help_text="How many were subscribed.")


class SubscriberOutput(serializers.ModelSerializer):
    recipient = serializers.CharField(source="recipient.external_id")
    subscribed_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Subscription
        fields = ["recipient", "subscribed_at"]


class SubscriberPageOutput(serializers.Serializer):
    """One cursor page of a topic's subscribers (NewestFirstCursorPagination's shape)."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = SubscriberOutput(many=True)


class RecipientTopicOutput(serializers.ModelSerializer):
    topic = serializers.CharField(source="key")
    subscribed_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Subscription
        fields = ["topic", "subscribed_at"]


# --- Kinds and templates ---------------------------------------------------------------------------


class LocaleField(serializers.CharField):
    """A BCP 47 tag (de, de-AT, zh-Hant-TW) of a language Babel knows, in canonical case; empty: the default."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "BCP 47 (de, de-AT); empty for the default.")
        super().__init__(max_length=templating.LOCALE_MAX_LENGTH, allow_blank=True, required=False, default="",
                         **kwargs)

    def to_internal_value(self, data):
        try:
            return templating.locale_normalize(super().to_internal_value(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


def _part(help_text: str):
    return serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="",
                                 max_length=templating.SOURCE_MAX_CHARS_LONG, help_text=help_text)


class TemplatePartsInput(serializers.Serializer):
    """A template without its kind (as a kind's registration carries them). Each part is Liquid."""

    channel = ChoiceWithListField(choices=Channel.choices)
    locale = LocaleField()
    title = _part("In-app and webhook: the title (rendered, cut at 200 characters).")
    body = _part("In-app and webhook: the text (required for them).")
    subject = _part("Email: the subject (required for email).")
    text = _part("Email: the plain-text part (required for email).")
    html = _part("Email: the HTML part (optional).")

    def validate(self, attrs):
        parts = {p: attrs.get(p, "") for p in templating.ALL_PARTS}
        if errors := templating.parts_errors(attrs["channel"], parts):
            raise serializers.ValidationError(errors)
        return attrs


class TemplateInput(TemplatePartsInput):
    kind = KindField(help_text=f"One of {kind_registry.kind_choices_text(campaign_kinds=False)} (a campaign carries "
                               "its own templates: POST /api/v1/campaigns/ with `templates`).")

    def validate_kind(self, value):
        if value in kind_registry.BUILT_IN_CAMPAIGN:
            raise serializers.ValidationError(
                f'"{value}" is a campaign kind: a campaign carries its own templates (POST /api/v1/campaigns/ '
                "with `templates`).")
        return value

    def to_internal_value(self, data):
        # PUT and PATCH change one template: what the request leaves out is the template's (for PATCH),
        # so that the checks see the template as it would be saved.
        instance = self.instance
        if instance is not None and self.partial and isinstance(data, dict):
            data = {"kind": instance.kind, "channel": instance.channel, "locale": instance.locale, **instance.parts,
                    **data}
        return super().to_internal_value(data)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        clash = Template.objects.filter(kind=attrs["kind"], channel=attrs["channel"], locale=attrs["locale"])
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if (other := clash.first()) is not None:
            raise serializers.ValidationError({"locale": [
                f"Template {other.pk} is the {attrs['channel']} template of {attrs['kind']} in "
                f"{attrs['locale'] or 'the default locale'}: change that one (PUT /api/v1/templates/{other.pk}/)."]})
        return attrs


class TemplateOutput(serializers.ModelSerializer):
    class Meta:
        model = Template
        fields = ["id", "kind", "channel", "locale", "title", "body", "subject", "text", "html", "created_at",
                  "updated_at"]


class KindInput(serializers.Serializer):
    name = serializers.RegexField(
        KIND_NAME_REGEX, max_length=KIND_NAME_MAX_LENGTH,
        error_messages={"invalid": "1 to 16 characters: a lower-case letter, then lower-case letters, digits, "
                                   "'_', '.' or '-'."},
        help_text="1 to 16 characters: a lower-case letter, then lower-case letters, digits, '_', '.' or '-'.")
    urgent = serializers.BooleanField(default=False, help_text="Urgent kinds are never held back (digests, quiet hours).")
    digest_window_seconds = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=DIGEST_WINDOW_MIN_SECONDS,
        max_value=DIGEST_WINDOW_MAX_SECONDS,
        help_text="A default digest: notifications of this kind sent without a `digest` are folded per recipient "
                  "under the kind's name for this many seconds (1 s to 7 days). Absent or null: none.")
    templates = TemplatePartsInput(many=True, required=False, default=list, max_length=100)

    def validate_name(self, value):
        if value in kind_registry.BUILT_IN:
            raise serializers.ValidationError(f'"{value}" is a built-in kind.')
        if NotificationKind.objects.filter(name=value).exists():
            raise serializers.ValidationError(f'"{value}" is registered already.')
        return value

    def validate_templates(self, value):
        return templates_one_per_channel_and_locale(value)


def templates_one_per_channel_and_locale(templates: list[dict]) -> list[dict]:
    """A kind's or a campaign's templates: one per channel and locale."""
    seen = set()
    for template in templates:
        key = (template["channel"], template["locale"])
        if key in seen:
            raise serializers.ValidationError(
                f"Two {key[0]} templates in {key[1] or 'the default locale'}: one per channel and locale.")
        seen.add(key)
    return templates


class KindTemplateOutput(serializers.Serializer):
    id = serializers.IntegerField()
    channel = serializers.CharField()
    locale = serializers.CharField()


class KindOutput(serializers.Serializer):
    name = serializers.CharField()
    urgent = serializers.BooleanField()
    digest_window_seconds = serializers.IntegerField(allow_null=True)
    built_in = serializers.BooleanField()
    templates = KindTemplateOutput(many=True, help_text="Its templates (GET /api/v1/templates/<id>/ for one).")


class _PreviewRecipient(serializers.Serializer):
    id = RecipientIdField(required=False, default="")
    attributes = DataField(required=False, default=dict)


class TemplatePreviewInput(serializers.Serializer):
    """Render without sending: the stored template of `kind` and `channel` for `locale` (falling back
    region, language, default), or the parts given here (an unsaved edit)."""

    kind = KindField()
    channel = ChoiceWithListField(choices=Channel.choices, required=False, default=Channel.IN_APP.value)
    locale = LocaleField(help_text="The recipient's locale (BCP 47); empty: the default.")
    actor = serializers.CharField(max_length=128, required=False, allow_blank=True, default="",
                                  help_text="The sender's id, as the template sees it.")
    recipient = _PreviewRecipient(required=False, default=dict)
    data = DataField(required=False, default=dict)
    title = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                  max_length=templating.SOURCE_MAX_CHARS_LONG)
    body = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                 max_length=templating.SOURCE_MAX_CHARS_LONG)
    subject = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                    max_length=templating.SOURCE_MAX_CHARS_LONG)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                 max_length=templating.SOURCE_MAX_CHARS_LONG)
    html = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                 max_length=templating.SOURCE_MAX_CHARS_LONG)

    def validate(self, attrs):
        given = {p: attrs[p] for p in templating.ALL_PARTS if p in attrs}
        if given and (errors := templating.parts_errors(attrs["channel"], given)):
            raise serializers.ValidationError(errors)
        return attrs


class TemplatePreviewOutput(serializers.Serializer):
    template = serializers.IntegerField(allow_null=True, help_text="The stored template rendered (null: the parts given).")
    locale = serializers.CharField(help_text="The locale of the template rendered (empty: the default).")
    title = serializers.CharField(required=False)
    body = serializers.CharField(required=False)
    subject = serializers.CharField(required=False)
    text = serializers.CharField(required=False)
    html = serializers.CharField(required=False)
