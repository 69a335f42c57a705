from rest_framework import serializers

from campaigns.models import Campaign
from campaigns.segments import SegmentError, segment_parse
from core.api import FieldsBuiltOnce
from core.fields import (
    AwareDateTimeField,
    ChoiceWithListField,
    DataField,
    RecipientIdField,
    StorableJSONField,
)
from core.messages import CAMPAIGN_KINDS, Kind
from inbox import quiet_hours as quiet
from inbox.models import SUBSCRIPTION_KEY_REGEX
from inbox.serializers import (
    EscalationInput,
    KindField,
    TemplatePartsInput,
    send_at_bounded,
    templates_one_per_channel_and_locale,
)

CAMPAIGN_TEMPLATES_MAX = 50


class SegmentField(StorableJSONField):
    def to_internal_value(self, data):
        try:
            return segment_parse(super().to_internal_value(data))
        except SegmentError as exc:
            raise serializers.ValidationError(str(exc)) from None


class CampaignCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    kind = ChoiceWithListField(choices=[k.value for k in CAMPAIGN_KINDS], required=False, default=Kind.OFFER)
    segment = SegmentField(help_text='{"type": "ALL_USERS"} | {"type": "USER_IDS", "ids": [...]} | '
                                     '{"type": "ATTRIBUTE", "attribute": "country", "op": "eq" | "in", "value": ...} | '
                                     '{"type": "TOPIC", "key": "post:42"} (the topic\'s subscribers)')
    data = DataField(required=False, default=dict)
    templates = TemplatePartsInput(
        many=True, required=False, default=list, max_length=CAMPAIGN_TEMPLATES_MAX,
        help_text="Its own templates (Liquid), one per channel and locale: a recipient whose locale has one "
                  "(de-AT, then de, then the default) gets it rendered; the others get title and body.")

    escalate = EscalationInput(
        required=False, allow_null=True, default=None,
        help_text="Each recipient's in-app notification lands at once; the named channels are sent only "
                  "`after_seconds` later, and only if it is still unread (or unseen) then.")
    send_at = AwareDateTimeField(
        required=False, allow_null=True, default=None,
        help_text="Send it at this time (ISO 8601 with an offset; at most a year ahead, at most a day in the past): "
                  "held until then (`scheduled`). Absent, null or a little in the past (clock skew): now.")
    local_time = serializers.CharField(
        required=False, allow_null=True, default=None,
        help_text='HH:MM, 24 h ("09:00"): each recipient gets it at the next such time in its own time zone (its '
                  "`timezone`; blank: DEFAULT_TIMEZONE) at or after send_at (or now, without one).")

    def validate_templates(self, value):
        return templates_one_per_channel_and_locale(value)

    def validate_send_at(self, value):
        return send_at_bounded(value)

    def validate_local_time(self, value):
        if value is None:
            return None
        try:
            return quiet.parse_hh_mm(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from None


class CampaignOutput(serializers.ModelSerializer):
    # A notification sent to a topic is a campaign of a user-to-user (or registered) kind, with its sender.
    kind = serializers.CharField()

    class Meta:
        model = Campaign
        fields = [
            "id", "title", "body", "kind", "sender", "segment", "data", "templates", "escalate", "status",
            "targeted", "delivered", "failed", "skipped",
            "send_at", "local_time", "scheduled", "released", "zones",
            "created_at", "dispatched_at", "completed_at", "cancelled_at",
        ]


class TopicNotificationInput(FieldsBuiltOnce, serializers.Serializer):
    """POST /api/v1/notifications/ with `topic` instead of `recipient`."""

    sender = RecipientIdField(help_text="The product user id of who caused it: the topic's subscribers but this one get it.")
    topic = serializers.RegexField(SUBSCRIPTION_KEY_REGEX, help_text="The topic's key, such as post:42.",
                                   error_messages={"invalid": "A topic key is 1 to 200 letters, digits and '_', '.', ':', '@' or '-'."})
    kind = KindField(campaign_kinds=False)
    message = serializers.CharField(max_length=2000)
    data = DataField(required=False, default=dict)

    def validate(self, attrs):
        extra = sorted({"recipient", "send_at", "delay_seconds", "expires_at", "digest", "escalate", "local_time"}
                       & set(self.initial_data))
        if extra:
            raise serializers.ValidationError({extra[0]: [
                "Not with `topic`: a topic's notification goes to each of its subscribers, now, on its own "
                "(send to a recipient for this)."]})
        return attrs


class NotificationOrTopicAcceptedOutput(serializers.Serializer):
    id = serializers.CharField(help_text="The notification's id; its inbox item carries the same id (a topic's: each "
                                         "subscriber's is <id>:<recipient id>).")
    topic = serializers.CharField(required=False, help_text="Only for a notification sent to a topic.")
    status = serializers.CharField(default="accepted", help_text="`accepted`, or `scheduled` (held until its "
                                                                 "send_at or delay; a recipient's only).")
