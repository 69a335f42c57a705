"""Serializer fields and checks with the project's validation rules and error messages.

Everything a client sends ends up in PostgreSQL text or jsonb and in JSON encoded by orjson, which
cannot carry a NUL character, a lone surrogate, an integer beyond 64 bits or a non-finite number.
These checks refuse them at the door (400 naming the field), for bodies (the JSON parser in
`api.py` and `DataField`), path ids and query parameters (`middleware.RequestInputMiddleware`).
"""

import json
import math
import re

import orjson
from django.core.validators import RegexValidator
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.utils import html

from core.messages import RECIPIENT_ID_MAX_LENGTH, RECIPIENT_ID_REGEX

DATA_MAX_BYTES = 16 * 1024
# Deeper JSON is refused: enough for any real payload, far below what would exhaust the stack.
JSON_MAX_DEPTH = 32
INT64_MAX = 2**63 - 1
# Notification ids: a UUID, or "<campaign id>:<recipient id>".
NOTIFICATION_ID_MAX_LENGTH = 160
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_error(value: str) -> str | None:
    """Why PostgreSQL and our encoders cannot store this string, or None."""
    if "\x00" in value:
        return "Null characters (\\u0000) are not allowed."
    if _SURROGATE.search(value):
        return "Lone surrogate characters (\\ud800-\\udfff) are not allowed."
    return None


def json_value_error(value: object, *, max_depth: int = JSON_MAX_DEPTH) -> str | None:
    """Why a decoded JSON value cannot be stored as it is (depth, text, numbers), or None."""
    problem = json_value_problem(value, max_depth=max_depth)
    return problem and problem[1]


def json_value_problem(value: object, *, max_depth: int = JSON_MAX_DEPTH) -> tuple[list, str] | None:
    """([keys and indexes to it], why) for the first part of a decoded JSON value that cannot be
    stored as it is, or None. Iterative, so that no value can exhaust the stack."""
    stack: list[tuple[object, list, int]] = [(value, [], 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                return path, _at(f"Nested more than {max_depth} levels deep", path)
            for key, child in item.items():
                if problem := text_error(key):
                    return [*path, key], _at(f"A key: {problem.rstrip('.')}", path)
                stack.append((child, [*path, key], depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                return path, _at(f"Nested more than {max_depth} levels deep", path)
            stack.extend((child, [*path, i], depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            if problem := text_error(item):
                return path, _at(problem.rstrip("."), path)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -INT64_MAX - 1 <= item <= INT64_MAX:
                return path, _at("Integers must fit in 64 bits (-2^63 to 2^63-1)", path)
        elif isinstance(item, float):
            # orjson decodes integers beyond 64 bits as floats: refuse those magnitudes too.
            if not math.isfinite(item) or abs(item) > INT64_MAX:
                return path, _at("Numbers must be finite and within the 64-bit integer range", path)
        else:
            return path, _at("Not a JSON value", path)
    return None


def _at(message: str, path: list) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{message} (at {where})." if where else f"{message}."


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
        valid = ", ".join(str(c[0] if isinstance(c, tuple) else c) for c in choices)
        kwargs.setdefault("error_messages", {})
        kwargs["error_messages"].setdefault("invalid_choice", f'"{{input}}" is not a valid choice; valid choices: {valid}.')
        super().__init__(choices, **kwargs)


class StorableJSONField(serializers.JSONField):
    """Any JSON value that PostgreSQL's jsonb and our encoders can carry (see `json_value_error`).

    In a form (not a JSON body, which `api.StorableJSONParser` has read already) the value is JSON
    text: orjson reads it, refusing nesting deeper than 1024 levels without recursing.
    """

    def to_internal_value(self, data):
        if isinstance(data, (str, bytes)) and (self.binary or getattr(data, "is_json_string", False)):
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise serializers.ValidationError(f"Not valid JSON: {exc}.") from None
        if problem := json_value_error(data):  # before DRF's own checks, which recurse
            raise serializers.ValidationError(problem)
        return super().to_internal_value(data)


class DataField(StorableJSONField):
    """Free-form JSON object attached to a notification, at most 16 KiB once encoded."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > DATA_MAX_BYTES:
            raise serializers.ValidationError(f"Is {size} bytes once encoded; the limit is {DATA_MAX_BYTES} bytes.")
        return value


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time with its UTC offset (`Z` or `+01:00`): a time without one is a 400, never read
    in the server's time zone."""

    def to_internal_value(self, value):
        if not isinstance(value, str):
            raise serializers.ValidationError("Must be an ISO 8601 time with an offset, as a string.")
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None  # out of range (month 13): DRF's own message below
        if parsed is not None and parsed.tzinfo is None:
            raise serializers.ValidationError(
                "Must carry its UTC offset (2026-12-24T18:00:00+01:00 or ...Z): a time without one is ambiguous.")
        return super().to_internal_value(value)


_FORM_INTEGER = re.compile(r"[0-9]{1,19}")


class StrictIntegerField(serializers.IntegerField):
    """An integer, as a JSON number without a fraction: not a string, a float (3.0 too) or a boolean,
    which DRF's IntegerField would take. In a form body (every value a string), decimal digits."""

    def get_value(self, dictionary):
        # Here, not from the parent's data: the fields of FieldsBuiltOnce serializers keep no state.
        value = super().get_value(dictionary)
        if html.is_html_input(dictionary) and isinstance(value, str) and _FORM_INTEGER.fullmatch(value):
            return int(value)
        return value

    def to_internal_value(self, data):
        if not isinstance(data, int) or isinstance(data, bool):
            raise serializers.ValidationError("Must be an integer (a JSON number without a fraction).")
        return super().to_internal_value(data)


# Path ids follow the same rules as the ids in bodies (checked by `middleware.RequestInputMiddleware`).
# A campaign id (`pk`) that is not a number names no campaign: a 404, as any unknown campaign.
PATH_ID_FIELDS = {
    "recipient_id": RecipientIdField(),
    "notification_id": serializers.CharField(max_length=NOTIFICATION_ID_MAX_LENGTH),
}

_EVENT_ID = re.compile(r"[0-9]{1,18}")


def event_id_parse(raw: str | None) -> int | None:
    """A Last-Event-ID (an inbox row id), or None when absent; ValueError when it is not one."""
    if not raw:
        return None
    if not _EVENT_ID.fullmatch(raw):
        raise ValueError("Must be the id of an event: 1 to 18 digits (0-9).")
    return int(raw)
