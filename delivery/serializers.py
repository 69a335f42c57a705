from rest_framework import serializers

from core.fields import ChoiceWithListField
from core.messages import Channel
from delivery import caps
from delivery.models import ChannelDeliveryStatus, FrequencyCap
from inbox import kinds as kind_registry
from delivery.selectors import TraceStatus


class ChannelTraceOutput(serializers.Serializer):
    channel = serializers.CharField(help_text="`webhook` or `email`.")
    status = serializers.ChoiceField(choices=ChannelDeliveryStatus.values)
    attempts = serializers.IntegerField(help_text="Attempts made so far (a retry scheduled is not counted yet).")
    last_error = serializers.CharField(help_text="The last attempt's error; empty once sent.")
    updated_at = serializers.DateTimeField()
    next_attempt_at = serializers.DateTimeField(allow_null=True, help_text=(
        "When the next attempt is due (pending or retrying: the scheduler sends it then, or a little later "
        "while its endpoint host is busy); null once settled."))
    held = serializers.CharField(help_text=(
        "Why it waits past its settling, while it does: \"quiet hours until <time>\" (the recipient's quiet "
        "hours), \"escalation: sent then unless read\" (its `escalate`); empty otherwise. An escalation that "
        "reading cancelled ends `skipped` with last_error \"read before escalation\"."))


class DeadLetterTraceOutput(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.CharField()
    error = serializers.CharField()
    channel = serializers.CharField(help_text="Empty when the whole task was set aside.")
    attempts = serializers.IntegerField()
    status = serializers.CharField(help_text="`dead` (waiting for an operator), `replayed` or `discarded`.")
    created_at = serializers.DateTimeField()


class InAppTraceOutput(serializers.Serializer):
    delivered_at = serializers.DateTimeField()
    seen_at = serializers.DateTimeField(allow_null=True)
    read_at = serializers.DateTimeField(allow_null=True)
    archived_at = serializers.DateTimeField(allow_null=True)


class NotificationTraceOutput(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(
        choices=TraceStatus.ALL,
        help_text="`accepted` (not settled yet), `scheduled` (settled; an external channel still to be sent), "
                  "`delivered`, `skipped` (see `reason`: `expired` when its expires_at passed first), `dead_lettered` (see "
                  "`reason` and `dead_letters`), `cancelled` (held, then cancelled by DELETE), `digested` (folded into "
                  "the digest `reason` names).")
    reason = serializers.CharField(help_text="Why it was skipped or dead-lettered (`capped`: over a frequency cap); "
                                             "for a delivered one, the channels a frequency cap held back "
                                             "(`capped: email`), else empty.")
    recipient = serializers.CharField()
    campaign_id = serializers.IntegerField(allow_null=True)
    accepted_at = serializers.DateTimeField(allow_null=True)
    settled_at = serializers.DateTimeField(allow_null=True, help_text="When the worker settled it (the ledger).")
    in_app = InAppTraceOutput(allow_null=True, help_text="The inbox row and its read state; null when there is none.")
    channels = ChannelTraceOutput(many=True)
    dead_letters = DeadLetterTraceOutput(many=True)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not a string of digits, a boolean or a float (`"3"`, `true` and `3.0` are a 400)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class FrequencyCapInput(serializers.Serializer):
    channel = ChoiceWithListField(choices=Channel.choices, help_text="`in_app`, `email` or `webhook`.")
    kind = serializers.CharField(required=False, allow_null=True, default=None, max_length=64, help_text=(
        f"One of {kind_registry.kind_choices_text()}; null or absent: every kind."))
    max = StrictIntegerField(min_value=caps.MAX_MIN, max_value=caps.MAX_MAX, help_text=(
        f"Deliveries allowed per recipient in the window ({caps.MAX_MIN} to {caps.MAX_MAX:,})."))
    per_seconds = StrictIntegerField(min_value=caps.PER_SECONDS_MIN, max_value=caps.PER_SECONDS_MAX, help_text=(
        f"The sliding window in seconds ({caps.PER_SECONDS_MIN} s to 30 days: {caps.PER_SECONDS_MAX})."))

    def validate_kind(self, value):
        if value is not None and not kind_registry.kind_exists(value):
            raise serializers.ValidationError(
                f'"{value}" is not a kind; valid kinds: {kind_registry.kind_choices_text()}.')
        return value


class FrequencyCapOutput(serializers.ModelSerializer):
    class Meta:
        model = FrequencyCap
        fields = ["id", "channel", "kind", "max", "per_seconds", "created_at"]
