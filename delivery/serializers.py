from rest_framework import serializers

from delivery.models import ChannelDeliveryStatus
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
                  "`delivered`, `skipped` (see `reason`), `dead_lettered` (see `reason` and `dead_letters`).")
    reason = serializers.CharField(help_text="Why it was skipped or dead-lettered; empty otherwise.")
    recipient = serializers.CharField()
    campaign_id = serializers.IntegerField(allow_null=True)
    accepted_at = serializers.DateTimeField(allow_null=True)
    settled_at = serializers.DateTimeField(allow_null=True, help_text="When the worker settled it (the ledger).")
    in_app = InAppTraceOutput(allow_null=True, help_text="The inbox row and its read state; null when there is none.")
    channels = ChannelTraceOutput(many=True)
    dead_letters = DeadLetterTraceOutput(many=True)
