from rest_framework import serializers

from inbox.models import USER_TO_USER_KINDS, Notification, Recipient
from notifications_project.fields import ChoiceWithListField, DataField, RecipientIdField

MESSAGE_MAX_LENGTH = 2000


class NotificationSendInput(serializers.Serializer):
    sender = RecipientIdField(help_text="The product user id of who caused the notification.")
    recipient = RecipientIdField(help_text="The product user id of who receives it.")
    kind = ChoiceWithListField(choices=[k.value for k in USER_TO_USER_KINDS])
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH)
    data = DataField(required=False, default=dict)

    def validate(self, attrs):
        if attrs["sender"] == attrs["recipient"]:
            raise serializers.ValidationError({"recipient": ["Must differ from sender."]})
        return attrs


class SeedSendInput(serializers.Serializer):
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

    class Meta:
        model = Notification
        fields = ["id", "kind", "sender", "title", "message", "data", "campaign", "created_at", "delivered_at"]


RECIPIENTS_PER_REQUEST_MAX = 10_000


class RecipientInput(serializers.Serializer):
    id = RecipientIdField(help_text="The product's user id.")
    email = serializers.EmailField(required=False, allow_blank=True, help_text="Receives notifications by email.")
    push_endpoint = serializers.URLField(max_length=500, required=False, allow_blank=True,
                                         help_text="Receives notifications as an HTTP POST of JSON (webhook).")
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True)
    attributes = DataField(required=False, help_text="Free-form JSON object used by ATTRIBUTE segments.")


class RecipientUpdateInput(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True)
    push_endpoint = serializers.URLField(max_length=500, required=False, allow_blank=True)
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True)
    attributes = DataField(required=False, help_text="Replaces the recipient's attributes.")


class RecipientUpsertOutput(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


class RecipientOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id")

    class Meta:
        model = Recipient
        fields = ["id", "email", "push_endpoint", "locale", "attributes", "created_at", "updated_at"]
