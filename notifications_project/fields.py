"""Serializer fields with the project's validation rules and error messages."""

import json

from django.core.validators import RegexValidator
from rest_framework import serializers

from inbox.models import RECIPIENT_ID_MAX_LENGTH, RECIPIENT_ID_REGEX

DATA_MAX_BYTES = 16 * 1024


class RecipientIdField(serializers.CharField):
    """A product user id: 1-128 characters, no white space and no slash."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", RECIPIENT_ID_MAX_LENGTH)
        super().__init__(**kwargs)
        self.validators.append(
            RegexValidator(RECIPIENT_ID_REGEX, message="User ids may not contain white space or '/'.")
        )


class ChoiceWithListField(serializers.ChoiceField):
    """A choice field whose error lists the valid choices."""

    def __init__(self, choices, **kwargs):
        valid = ", ".join(str(c) for c in choices)
        kwargs.setdefault("error_messages", {})
        kwargs["error_messages"].setdefault("invalid_choice", f'"{{input}}" is not a valid choice; valid choices: {valid}.')
        super().__init__(choices, **kwargs)


class DataField(serializers.JSONField):
    """Free-form JSON object attached to a notification, at most 16 KiB once encoded."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > DATA_MAX_BYTES:
            raise serializers.ValidationError(f"Is {size} bytes once encoded; the limit is {DATA_MAX_BYTES} bytes.")
        return value
