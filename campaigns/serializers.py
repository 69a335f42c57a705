from rest_framework import serializers

from campaigns.models import Campaign
from campaigns.segments import SegmentError, segment_parse
from core.fields import ChoiceWithListField, DataField, StorableJSONField
from core.messages import CAMPAIGN_KINDS, Kind


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
                                     '{"type": "ATTRIBUTE", "attribute": "country", "op": "eq" | "in", "value": ...}')
    data = DataField(required=False, default=dict)


class CampaignOutput(serializers.ModelSerializer):
    class Meta:
        model = Campaign
        fields = [
            "id", "title", "body", "kind", "segment", "data", "status",
            "targeted", "delivered", "failed", "skipped",
            "created_at", "dispatched_at", "completed_at", "cancelled_at",
        ]
