"""Segments: who a campaign goes to. Parsing is pure; `segment_recipients` turns one into a query."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import QuerySet

from core.messages import RECIPIENT_ID_REGEX
from inbox import subscriptions
from inbox.models import SUBSCRIPTION_KEY_REGEX, Recipient

USER_IDS_MAX = 10_000
IN_VALUES_MAX = 1_000
SEGMENT_TYPES = ("ALL_USERS", "USER_IDS", "ATTRIBUTE", "TOPIC")
ATTRIBUTE_OPS = ("eq", "in")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RECIPIENT_ID = re.compile(RECIPIENT_ID_REGEX)
_SUBSCRIPTION_KEY = re.compile(SUBSCRIPTION_KEY_REGEX)
_SCALARS = (str, int, float, bool)


class SegmentError(ValueError):
    pass


@dataclass(frozen=True)
class AllUsers:
    def to_json(self) -> dict:
        return {"type": "ALL_USERS"}


@dataclass(frozen=True)
class UserIds:
    ids: tuple[str, ...]

    def to_json(self) -> dict:
        return {"type": "USER_IDS", "ids": list(self.ids)}


@dataclass(frozen=True)
class Attribute:
    attribute: str
    op: str
    value: object

    def to_json(self) -> dict:
        return {"type": "ATTRIBUTE", "attribute": self.attribute, "op": self.op, "value": self.value}


@dataclass(frozen=True)
class Subscribers:
    """The recipients subscribed to a key (the API's topic), but for `exclude` (the actor of a notification)."""

    key: str
    exclude: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"type": "TOPIC", "key": self.key, **({"exclude": list(self.exclude)} if self.exclude else {})}


Segment = AllUsers | UserIds | Attribute | Subscribers


def segment_parse(raw: object) -> Segment:
    """Validate a segment as the API receives it; SegmentError says what is wrong and what is valid."""
    if not isinstance(raw, dict):
        raise SegmentError('Must be an object such as {"type": "ALL_USERS"}.')
    kind = raw.get("type")
    if kind == "ALL_USERS":
        return AllUsers()
    if kind == "USER_IDS":
        ids = raw.get("ids")
        if not isinstance(ids, list) or not ids:
            raise SegmentError("USER_IDS needs a non-empty list `ids`.")
        if len(ids) > USER_IDS_MAX:
            raise SegmentError(f"USER_IDS takes at most {USER_IDS_MAX} ids; got {len(ids)}.")
        bad = [i for i in ids if not isinstance(i, str) or not _RECIPIENT_ID.match(i)]
        if bad:
            raise SegmentError(f"USER_IDS ids must be user ids (1-128 characters, no space or '/'): {bad[:3]!r}.")
        return UserIds(ids=tuple(dict.fromkeys(ids)))
    if kind == "ATTRIBUTE":
        attribute, op, value = raw.get("attribute"), raw.get("op"), raw.get("value")
        if not isinstance(attribute, str) or not _ATTRIBUTE_NAME.match(attribute):
            raise SegmentError("ATTRIBUTE needs `attribute`: 1-64 letters, digits, '_', '.' or '-'.")
        if op not in ATTRIBUTE_OPS:
            raise SegmentError(f"Unknown op {op!r}; valid ops: {', '.join(ATTRIBUTE_OPS)}.")
        if op == "eq" and not isinstance(value, _SCALARS):
            raise SegmentError("op eq needs `value`: a string, number or boolean.")
        if op == "in":
            if not isinstance(value, list) or not value or len(value) > IN_VALUES_MAX:
                raise SegmentError(f"op in needs `value`: a list of 1 to {IN_VALUES_MAX} strings, numbers or booleans.")
            if not all(isinstance(v, _SCALARS) for v in value):
                raise SegmentError("op in values must be strings, numbers or booleans.")
        return Attribute(attribute=attribute, op=op, value=value)
    if kind == "TOPIC":
        key, exclude = raw.get("key"), raw.get("exclude", [])
        if not isinstance(key, str) or not _SUBSCRIPTION_KEY.match(key):
            raise SegmentError("TOPIC needs `key`: 1 to 200 letters, digits and '_', '.', ':', '@' or '-'.")
        if not isinstance(exclude, list) or len(exclude) > 1 or not all(
                isinstance(i, str) and _RECIPIENT_ID.match(i) for i in exclude):
            raise SegmentError("TOPIC's `exclude` is a list of at most one user id.")
        return Subscribers(key=key, exclude=tuple(exclude))
    raise SegmentError(f"Unknown segment type {kind!r}; valid types: {', '.join(SEGMENT_TYPES)}.")


def segment_recipients(segment: Segment) -> QuerySet[Recipient]:
    """The recipients a segment matches."""
    if isinstance(segment, AllUsers):
        return Recipient.objects.all()
    if isinstance(segment, UserIds):
        return Recipient.objects.filter(external_id__in=segment.ids)
    if isinstance(segment, Subscribers):
        return subscriptions.recipients_subscribed(key=segment.key).exclude(external_id__in=segment.exclude)
    if segment.op == "eq":
        return Recipient.objects.with_attribute(segment.attribute, segment.value)
    return Recipient.objects.with_attribute_in(segment.attribute, segment.value)
