"""The messages on our topics: typed dataclasses, and their JSON encoding (schema version 1).

Handlers receive these, never Kafka records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import orjson
from django.db import models

SCHEMA_VERSION = 1
# The ledger's and the directory's limits, checked when a record is read: records can come from any producer.
NOTIFICATION_ID_MAX_LENGTH = 160
RECIPIENT_ID_MAX_LENGTH = 128
# A recipient (user) id: no white space, no "/" (it sits in URL paths).
RECIPIENT_ID_REGEX = r"^[^\s/]{1,128}$"
MAX_RETRY_DELAY_SECONDS = 86_400
MAX_PAYLOAD_BYTES = 1024 * 1024
# PostgreSQL cannot store NUL in text: an id holding one could never be settled, and made storable
# (U+FFFD) for its dead letter it could name, and so settle, another recipient's real notification.
NUL_IN_ID = "ids must not contain NUL"
# A campaign chunk's recipients at most (DISPATCHER_CHUNK_SIZE is checked against it).
CHUNK_MAX_RECIPIENTS = 5000
# A dead-letter record keeps at most this much of the record it speaks of: under Apache Kafka's default
# 1 MiB record limit with its headers, so that the dead-letter topic always takes it.
DEAD_LETTER_PAYLOAD_BYTES = 512 * 1024
# A digest's key and window (the API's limits, checked again when a record is read).
DIGEST_KEY_MAX_LENGTH = 200
DIGEST_WINDOW_MIN_SECONDS = 1
DIGEST_WINDOW_MAX_SECONDS = 7 * 86_400
# An escalation's delay and what it may name (the API's limits, checked again when a record is read).
ESCALATE_AFTER_MIN_SECONDS = 1
ESCALATE_AFTER_MAX_SECONDS = 30 * 86_400
ESCALATE_CHANNELS = ("email", "webhook")
ESCALATE_UNLESS = ("read", "seen")


class Kind(models.TextChoices):
    """The built-in kinds of notification: the one list of them. A kind is stored as its string (a
    CharField) and these choices are checked only where a client names a kind (the API), so kinds
    that are not built in can be added later without touching stored rows."""

    FOLLOW = "follow"
    MENTION = "mention"
    LIKE = "like"
    CUSTOM = "custom"
    OFFER = "offer"
    ALERT = "alert"
    REMINDER = "reminder"


# The kinds a campaign can have; every other built-in kind is sent from one user to another.
CAMPAIGN_KINDS: tuple[Kind, ...] = (Kind.OFFER, Kind.ALERT, Kind.REMINDER)
USER_TO_USER_KINDS: tuple[Kind, ...] = tuple(k for k in Kind if k not in CAMPAIGN_KINDS)
# Their values: the OpenAPI schema names this choice set once (settings' ENUM_NAME_OVERRIDES), since
# two inputs take it (POST /api/v1/notifications/ and the seed's /send).
USER_TO_USER_KIND_VALUES: list[str] = [k.value for k in USER_TO_USER_KINDS]


def kind_choices(kinds: tuple[Kind, ...]) -> list[tuple[str, str]]:
    """Model or form choices for some of the kinds."""
    return [(k.value, k.label) for k in kinds]


class Channel(models.TextChoices):
    """Where a notification reaches its recipient: the one list of channels. In-app is the inbox row
    itself; the others are external (delivery/channels.py), each with its ledger row and retries."""

    IN_APP = "in_app"
    EMAIL = "email"
    WEBHOOK = "webhook"


class InvalidPayload(ValueError):
    """A record that is not a message of ours: not JSON, missing fields, unknown version, too large."""


@dataclass(frozen=True, slots=True)
class Origin:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message, where it was read, and the record as it was (for its dead letter)."""

    message: object
    origin: Origin
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    origin: Origin
    key: bytes | None
    value: bytes | None
    error: str


@dataclass(frozen=True, slots=True)
class DigestSpec:
    """Fold a notification into its recipient's digest `key`: the first one opens a window of
    `window_seconds`, the others until it closes are folded in, and one notification says them all."""

    key: str
    window_seconds: int

    def encode(self) -> dict:
        return {"key": self.key, "window_seconds": self.window_seconds}

    @classmethod
    def of_body(cls, body: object) -> DigestSpec:
        if not isinstance(body, dict):
            raise InvalidPayload("digest must be an object")
        key, seconds = body.get("key"), body.get("window_seconds")
        if not (isinstance(key, str) and 0 < len(key) <= DIGEST_KEY_MAX_LENGTH and "\x00" not in key):
            raise InvalidPayload(f"digest.key must be a string of 1 to {DIGEST_KEY_MAX_LENGTH} characters without NUL")
        if not (type(seconds) is int and DIGEST_WINDOW_MIN_SECONDS <= seconds <= DIGEST_WINDOW_MAX_SECONDS):
            raise InvalidPayload(f"digest.window_seconds must be an integer from {DIGEST_WINDOW_MIN_SECONDS} "
                                 f"to {DIGEST_WINDOW_MAX_SECONDS}")
        return cls(key=key, window_seconds=seconds)


@dataclass(frozen=True, slots=True)
class EscalationSpec:
    """Send `channels` (external ones) only `after_seconds` after the in-app notification landed, and
    only if it is still not `unless` ("read" or "seen") by then."""

    after_seconds: int
    channels: tuple[str, ...]
    unless: str = "read"

    def encode(self) -> dict:
        return {"after_seconds": self.after_seconds, "channels": list(self.channels), "unless": self.unless}

    @classmethod
    def of_body(cls, body: object) -> EscalationSpec:
        if not isinstance(body, dict):
            raise InvalidPayload("escalate must be an object")
        seconds, channels, unless = body.get("after_seconds"), body.get("channels"), body.get("unless", "read")
        if not (type(seconds) is int and ESCALATE_AFTER_MIN_SECONDS <= seconds <= ESCALATE_AFTER_MAX_SECONDS):
            raise InvalidPayload(f"escalate.after_seconds must be an integer from {ESCALATE_AFTER_MIN_SECONDS} "
                                 f"to {ESCALATE_AFTER_MAX_SECONDS}")
        if not (isinstance(channels, list) and channels and all(c in ESCALATE_CHANNELS for c in channels)):
            raise InvalidPayload(f"escalate.channels must be a non-empty list of {', '.join(ESCALATE_CHANNELS)}")
        if unless not in ESCALATE_UNLESS:
            raise InvalidPayload(f"escalate.unless must be one of {', '.join(ESCALATE_UNLESS)}")
        return cls(after_seconds=seconds, channels=tuple(dict.fromkeys(channels)), unless=unless)


@dataclass(frozen=True, slots=True)
class NotificationTask:
    """Deliver one notification to one recipient (topic notifications.send, keyed by recipient).

    A user-to-user task carries its content; a campaign task carries only the campaign id, and the
    worker reads the content from the campaign (a million tasks need not carry a million bodies).
    """

    notification_id: str
    recipient: str
    campaign_id: int | None = None
    kind: str = ""
    sender: str = ""
    message: str = ""  # empty: the worker renders it from the kind's template in the recipient's locale
    data: dict = field(default_factory=dict)
    created_at: str = ""  # ISO 8601, when the API accepted it (user-to-user tasks)
    digest: DigestSpec | None = None  # fold into the recipient's digest (user-to-user tasks); absent: deliver it
    escalate: EscalationSpec | None = None  # hold these external channels until it is still unread later
    expires_at: str = ""  # ISO 8601 with an offset: not delivered after it (skipped, `expired`); empty: never

    def expired(self, now: datetime) -> bool:
        """Whether its `expires_at` has passed by `now` (an aware datetime)."""
        return bool(self.expires_at) and datetime.fromisoformat(self.expires_at) <= now

    def encode(self) -> bytes:
        if self.campaign_id is not None:
            body = {"v": SCHEMA_VERSION, "id": self.notification_id, "recipient": self.recipient, "campaign": self.campaign_id}
        else:
            body = {
                "v": SCHEMA_VERSION,
                "id": self.notification_id,
                "recipient": self.recipient,
                "kind": self.kind,
                "sender": self.sender,
                "message": self.message,
                "data": self.data,
                "created_at": self.created_at,
            }
            if self.digest is not None:  # absent otherwise: records written before digests stay the same
                body["digest"] = self.digest.encode()
            if self.escalate is not None:  # likewise: absent unless set
                body["escalate"] = self.escalate.encode()
            if self.expires_at:  # only when set: records without it stay as they were
                body["expires_at"] = self.expires_at
        return orjson.dumps(body)

    @classmethod
    def decode(cls, raw: bytes | None) -> NotificationTask:
        return cls.of_body(_decode_json_object(raw))

    @classmethod
    def of_body(cls, body: dict) -> NotificationTask:
        try:
            notification_id, recipient = body["id"], body["recipient"]
            if not (isinstance(notification_id, str) and notification_id and isinstance(recipient, str) and recipient):
                raise InvalidPayload("id and recipient must be non-empty strings")
            if len(notification_id) > NOTIFICATION_ID_MAX_LENGTH or len(recipient) > RECIPIENT_ID_MAX_LENGTH:
                raise InvalidPayload(f"id over {NOTIFICATION_ID_MAX_LENGTH} or recipient over "
                                     f"{RECIPIENT_ID_MAX_LENGTH} characters")
            if "\x00" in notification_id or "\x00" in recipient:
                raise InvalidPayload(NUL_IN_ID)
            if "campaign" in body:
                campaign_id = _campaign_id(body["campaign"])
                if notification_id != f"{campaign_id}:{recipient}":
                    # Only the dispatcher makes campaign tasks, with this id: another would claim (and so
                    # silently drop) the ledger entry of a recipient's real task.
                    raise InvalidPayload("a campaign task's id must be <campaign id>:<recipient id>")
                return cls(notification_id=notification_id, recipient=recipient, campaign_id=campaign_id)
            task = cls(
                notification_id=notification_id,
                recipient=recipient,
                kind=body["kind"],
                sender=body.get("sender", ""),
                message=body["message"],
                data=body.get("data") or {},
                created_at=body["created_at"],
                digest=DigestSpec.of_body(body["digest"]) if body.get("digest") is not None else None,
                escalate=EscalationSpec.of_body(body["escalate"]) if body.get("escalate") is not None else None,
            )
        except KeyError as exc:
            raise InvalidPayload(f"missing field {exc.args[0]!r}") from None
        if not all(isinstance(v, str) for v in (task.kind, task.sender, task.message, task.created_at)):
            raise InvalidPayload("kind, sender, message and created_at must be strings")
        if not isinstance(task.data, dict):
            raise InvalidPayload("data must be an object")
        if "expires_at" in body:
            task = replace(task, expires_at=_aware_time(body["expires_at"], "expires_at"))
        return task


class Pack:
    """A record that stands for several messages. The consumer hands it to its handler whole (so that
    the handler can settle it as a set); when handling fails, it is split in halves like a batch,
    down to the single message, which is dead-lettered on its own as the record it would have been."""

    @property
    def size(self) -> int:
        """How many messages it stands for."""
        raise NotImplementedError

    def split(self) -> tuple[Pack, Pack]:
        """Two packs of about half its messages each, in order (size > 1)."""
        raise NotImplementedError

    def unpack(self) -> list:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CampaignChunk(Pack):
    """One campaign for many recipients (topic notifications.send): the dispatcher's unit of fan-out.

    It is produced to the partition each of its recipients' keys maps to (the producer's murmur2),
    so a recipient's campaign and user-to-user notifications share one partition and one worker.
    It reads as the campaign tasks it stands for, "<campaign id>:<recipient id>" each: a chunk read
    twice settles nothing twice, and a single-task record of the same campaign stays valid.
    """

    campaign_id: int
    recipients: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.recipients)

    def split(self) -> tuple[CampaignChunk, CampaignChunk]:
        middle = len(self.recipients) // 2
        return (CampaignChunk(self.campaign_id, self.recipients[:middle]),
                CampaignChunk(self.campaign_id, self.recipients[middle:]))

    def notification_id(self, recipient: str) -> str:
        return f"{self.campaign_id}:{recipient}"

    def unpack(self) -> list[NotificationTask]:
        campaign_id = self.campaign_id
        return [NotificationTask(notification_id=f"{campaign_id}:{recipient}", recipient=recipient,
                                 campaign_id=campaign_id) for recipient in self.recipients]

    def encode(self) -> bytes:
        return orjson.dumps({"v": SCHEMA_VERSION, "type": "CampaignChunk", "campaign": self.campaign_id,
                             "recipients": self.recipients})

    @classmethod
    def of_body(cls, body: dict) -> CampaignChunk:
        campaign_id = _campaign_id(body.get("campaign"))
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not 0 < len(recipients) <= CHUNK_MAX_RECIPIENTS:
            raise InvalidPayload(f"recipients must be a list of 1 to {CHUNK_MAX_RECIPIENTS} recipient ids")
        for recipient in recipients:  # "<campaign id>:<recipient id>" then fits the ledger's 160 characters
            if not (isinstance(recipient, str) and 0 < len(recipient) <= RECIPIENT_ID_MAX_LENGTH):
                raise InvalidPayload(f"recipient ids must be strings of 1 to {RECIPIENT_ID_MAX_LENGTH} characters")
            if "\x00" in recipient:
                raise InvalidPayload(NUL_IN_ID)
        return cls(campaign_id=campaign_id, recipients=tuple(recipients))


def send_record_decode(raw: bytes | None) -> NotificationTask | CampaignChunk:
    """A record of notifications.send: one task, or a chunk of one campaign's tasks."""
    body = _decode_json_object(raw)
    if body.get("type") == "CampaignChunk":
        return CampaignChunk.of_body(body)
    return NotificationTask.of_body(body)


class CampaignLike(Protocol):
    """What NotificationContent reads of a campaign (campaigns.models.Campaign, a layer above)."""

    id: int
    kind: str
    sender: str
    title: str
    body: str
    data: dict
    created_at: datetime
    templates: list  # its own templates ([] for none): delivery/rendering.py


@dataclass(frozen=True, slots=True)
class NotificationContent:
    """What one notification says, whoever it goes to and by whichever channel: the inbox row's
    content, the channels' payload and what a channel delivery stores for its retries.

    `kind` is a plain string (a Kind value, or later one a service registers), not a Kind member.
    """

    kind: str
    sender: str
    title: str
    message: str
    data: dict
    campaign_id: int | None
    created_at: datetime  # when the API accepted it
    html: str = ""  # an email's HTML part, rendered from an email template (the other channels have none)

    @classmethod
    def of_task(cls, task: NotificationTask) -> NotificationContent:
        """The content a user-to-user task carries (a campaign task carries none: see of_campaign)."""
        return cls(task.kind, task.sender, "", task.message, task.data, None, datetime.fromisoformat(task.created_at))

    @classmethod
    def of_campaign(cls, campaign: CampaignLike) -> NotificationContent:
        return cls(campaign.kind, campaign.sender, campaign.title, campaign.body, campaign.data, campaign.id,
                   campaign.created_at)

    def payload(self, *, notification_id: str, recipient: str) -> dict:
        """The notification as the external channels send it (the webhook's JSON body) and as its
        channel deliveries store it."""
        return {
            "id": notification_id, "recipient": recipient, "kind": self.kind, "sender": self.sender,
            "title": self.title, "message": self.message, "data": self.data, "campaign": self.campaign_id,
            "created_at": self.created_at.isoformat(),
        } | ({"html": self.html} if self.html else {})

    @classmethod
    def of_payload(cls, payload: Mapping) -> NotificationContent:
        """The content back from a payload (a stored channel delivery). Also reads the form stored
        before the payload was (its campaign under "campaign_id")."""
        return cls(
            kind=payload["kind"], sender=payload.get("sender", ""), title=payload.get("title", ""),
            message=payload["message"], data=payload.get("data") or {},
            campaign_id=payload["campaign"] if "campaign" in payload else payload.get("campaign_id"),
            created_at=datetime.fromisoformat(payload["created_at"]), html=payload.get("html") or "",
        )


# A scheduled campaign's part that stands for all its recipients (a `send_at` without `local_time`); a
# time zone name is at most 64 characters (a recipient's `timezone`).
CAMPAIGN_ZONE_ALL = "*"
CAMPAIGN_ZONE_MAX_LENGTH = 64


@dataclass(frozen=True, slots=True)
class CampaignCreated:
    """A campaign was created: fan it out (topic offers.created, keyed by campaign id). `zone`: only for
    a campaign held by the scheduler (`send_at`, `local_time`): which of its held parts was released, a
    time zone name (its recipients in that zone) or CAMPAIGN_ZONE_ALL (all of them). Encoded only when
    set, so the events written before it read as they did."""

    campaign_id: int
    zone: str | None = None

    def encode(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "type": "CampaignCreated", "campaign": self.campaign_id}
        if self.zone is not None:
            body["zone"] = self.zone
        return orjson.dumps(body)

    @classmethod
    def decode(cls, raw: bytes | None) -> CampaignCreated:
        body = _decode_json_object(raw)
        if body.get("type") != "CampaignCreated":
            raise InvalidPayload("not a CampaignCreated event")
        zone = body.get("zone")
        if zone is not None and not (isinstance(zone, str) and 0 < len(zone) <= CAMPAIGN_ZONE_MAX_LENGTH
                                     and "\x00" not in zone):
            raise InvalidPayload(f"a CampaignCreated zone must be a string of 1 to {CAMPAIGN_ZONE_MAX_LENGTH} characters")
        return cls(campaign_id=_campaign_id(body.get("campaign")), zone=zone)


@dataclass(frozen=True, slots=True)
class ChannelRetry:
    """Attempt `attempt` (2, 3, ...) of one external channel send, not before `due_at` (epoch seconds).
    Topic notifications.retry, keyed by recipient."""

    notification_id: str
    channel: str
    recipient: str
    attempt: int
    due_at: float

    def encode(self) -> bytes:
        return orjson.dumps({
            "v": SCHEMA_VERSION, "type": "ChannelRetry", "id": self.notification_id, "channel": self.channel,
            "recipient": self.recipient, "attempt": self.attempt, "due_at": self.due_at,
        })

    @classmethod
    def decode(cls, raw: bytes | None) -> ChannelRetry:
        body = _decode_json_object(raw)
        try:
            retry = cls(body["id"], body["channel"], body["recipient"], body["attempt"], float(body["due_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidPayload(f"not a ChannelRetry: {exc}") from None
        if body.get("type") != "ChannelRetry":
            raise InvalidPayload("not a ChannelRetry")
        if not all(isinstance(v, str) and 0 < len(v) <= NOTIFICATION_ID_MAX_LENGTH
                   for v in (retry.notification_id, retry.channel, retry.recipient)):
            raise InvalidPayload("id, channel and recipient must be short non-empty strings")
        if not isinstance(retry.attempt, int) or isinstance(retry.attempt, bool) or not 1 <= retry.attempt <= 1000:
            raise InvalidPayload("attempt must be a positive integer")  # 1: a replayed dead letter
        # A retry is never due more than a day ahead: a record claiming so would pause its partition
        # (and every recipient on it) until then.
        if not math.isfinite(retry.due_at) or retry.due_at > time.time() + MAX_RETRY_DELAY_SECONDS:
            raise InvalidPayload(f"due_at {retry.due_at!r} is not within a day")
        return retry


def _aware_time(value: object, name: str) -> str:
    """An ISO 8601 time with an offset, as a record carries it."""
    try:
        if isinstance(value, str) and len(value) <= 64 and datetime.fromisoformat(value).tzinfo is not None:
            return value
    except ValueError:
        pass
    raise InvalidPayload(f"{name} must be an ISO 8601 time with an offset")


def _campaign_id(value: object) -> int:
    """A campaign id as the database stores it (a positive 64-bit integer)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise InvalidPayload("campaign must be a positive 64-bit integer")
    return value


def _decode_json_object(raw: bytes | None) -> dict:
    if raw is None:
        raise InvalidPayload("empty record")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload(f"record of {len(raw)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidPayload("not a JSON object")
    if body.get("v") != SCHEMA_VERSION:
        raise InvalidPayload(f"unknown schema version {body.get('v')!r}")
    return body
