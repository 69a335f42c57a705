"""Reads of the delivery layer: the trace of one notification (GET /api/v1/notifications/<id>/)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from django.db import connection, transaction
from django.db.models import BinaryField, CharField, Exists, OuterRef, Value
from django.db.models.functions import Concat, Substr

from campaigns import selectors as campaign_selectors
from campaigns.models import Campaign, CampaignStatus
from core import topics
from core.messages import SCHEMA_VERSION, NotificationTask
from core.models import DeadLetter, OutboxEvent, ScheduledItem
from delivery.models import ChannelDelivery, ChannelDeliveryStatus, Delivery, DeliveryOutcome, DigestEvent
from delivery.routing import CAMPAIGN_CANCELLED
from delivery.services import CANCELLED, SEND, send_key
from inbox import services as inbox_services
from inbox.models import Notification


class TraceStatus:
    ACCEPTED = "accepted"  # the API (or a campaign) took it; the worker has not settled it yet
    SCHEDULED = "scheduled"  # held until its send_at; or settled with an external channel still to be sent
    DELIVERED = "delivered"  # settled; every channel sent (or had nothing to send)
    SKIPPED = "skipped"  # settled without delivery: `reason` says why (opted out, recipient deleted, ...)
    DEAD_LETTERED = "dead_lettered"  # settled as failed, or a channel ended in a dead letter
    DIGESTED = "digested"  # folded into a digest: `reason` names the digest's id (trace that one next)
    CANCELLED = "cancelled"  # held until its send_at and cancelled then (DELETE), or its campaign cancelled first

    ALL = (ACCEPTED, SCHEDULED, DELIVERED, SKIPPED, DEAD_LETTERED, DIGESTED, CANCELLED)


# "<campaign id>:<recipient id>": the id the dispatcher gives each campaign task.
_CAMPAIGN_TASK_ID = re.compile(r"([1-9][0-9]{0,18}):(.+)", re.DOTALL)
_CAMPAIGN_ACCEPTED = (CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED)


@dataclass(frozen=True)
class ChannelTrace:
    channel: str
    status: str
    attempts: int
    last_error: str
    updated_at: datetime
    next_attempt_at: datetime | None = None  # pending or retrying: when the scheduler sends it
    held: str = ""  # why a send waits past its settling: "quiet hours until ...", an escalation (delivery/holds.py)


@dataclass(frozen=True)
class DeadLetterTrace:
    id: int
    reason: str
    error: str
    channel: str
    attempts: int
    status: str
    created_at: datetime


@dataclass(frozen=True)
class InAppTrace:
    delivered_at: datetime
    seen_at: datetime | None
    read_at: datetime | None
    archived_at: datetime | None


@dataclass
class NotificationTrace:
    id: str
    status: str
    reason: str = ""
    recipient: str = ""
    campaign_id: int | None = None
    accepted_at: datetime | None = None
    settled_at: datetime | None = None
    in_app: InAppTrace | None = None
    channels: list[ChannelTrace] = field(default_factory=list)
    dead_letters: list[DeadLetterTrace] = field(default_factory=list)


def notification_trace(*, notification_id: str) -> NotificationTrace | None:
    """What became of one notification (`_trace`), read from one snapshot of the database: its reads
    are several statements, and a worker committing between two of them made a notification read as
    settled with no channels (the ledger read before the commit, the inbox row after: found in CI, a
    webhook still retrying traced `delivered`). Inside a caller's transaction, that transaction's."""
    if connection.in_atomic_block or connection.vendor != "postgresql":
        return _trace(notification_id)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _trace(notification_id)


def _trace(notification_id: str) -> NotificationTrace | None:
    """What became of one notification, from every place that holds a part of it; None if none does.

    Settled (the ledger, `Delivery`, holds the id; a held notification cancelled is there too, `cancelled`; or, for a campaign recipient reached in-app only,
    its inbox row stands for the ledger entry: `delivered`): `skipped` or `dead_lettered` (the worker could not
    process it) as the ledger says, with its reason; else `dead_lettered` if a channel ended dead,
    `scheduled` while a channel is pending or retrying, `delivered` otherwise. The channels, the
    dead letters naming the id (whatever their status: replayed and discarded ones too) and the inbox
    row (read state; none when the recipient opted out of in-app) come with it.

    Not settled: `scheduled` while it is held until its `send_at`; `accepted` when the outbox holds its task (the API's event, published or not, until
    the retention purge; or a replayed dead letter), or, for a campaign id `<campaign>:<recipient>`,
    when that campaign is queued, dispatching or dispatched and its segment holds the recipient now
    (`scheduled` while the campaign is held, none of its parts released yet). That is the segment as
    it is now: a recipient who joined it after the fan-out (or moved into a time zone released
    already) reads `accepted` until the campaign completes. A task published more than RELAY_RETENTION_SECONDS ago whose worker has not read it yet
    (the worker stopped for that long) has no trace until it is settled. Else `dead_lettered` when a
    dead letter names the id (a record set aside before it was settled), or None.

    Cost: primary-key and unique-index lookups, except the outbox (its send events, a table the
    retention purge bounds, compared by the first bytes of the payload) and the dead letters (no index
    on the id: a small table that the purge bounds too).
    """
    ledger = Delivery.objects.filter(notification_id=notification_id).first()
    rows = list(ChannelDelivery.objects.filter(notification_id=notification_id).order_by("channel"))
    due = {key: (due_at, payload) for key, due_at, payload in ScheduledItem.objects.filter(
        kind=SEND, key__in=[send_key(c.id) for c in rows]).values_list("key", "due_at", "payload")}
    channels = [ChannelTrace(c.channel, c.status, c.attempts, c.last_error, c.updated_at, item[0],
                             str(item[1].get("held", "")) if isinstance(item[1], dict) else "")
                for c in rows for item in (due.get(send_key(c.id), (None, None)),)]
    letters = [
        DeadLetterTrace(d.id, d.reason, d.error, d.channel, d.attempts, d.status, d.created_at)
        for d in DeadLetter.objects.filter(notification_id=notification_id).order_by("id")
    ]
    inbox_row = Notification.objects.filter(notification_id=notification_id).select_related("recipient").first()
    trace = NotificationTrace(id=notification_id, status="", channels=channels, dead_letters=letters)
    if inbox_row is not None:
        trace.in_app = InAppTrace(inbox_row.delivered_at, inbox_row.seen_at, inbox_row.read_at, inbox_row.archived_at)
        trace.accepted_at = inbox_row.created_at

    if ledger is not None:
        trace.recipient, trace.campaign_id, trace.settled_at = (
            ledger.recipient_external_id, ledger.campaign_id, ledger.settled_at)
        trace.status, trace.reason = _settled_status(ledger, channels)
        return trace
    if inbox_row is not None:  # a campaign chunk's in-app-only delivery: its inbox row is its ledger entry
        trace.recipient = inbox_row.recipient.external_id
        trace.campaign_id, trace.settled_at = inbox_row.campaign_id, inbox_row.delivered_at
        trace.status = TraceStatus.DELIVERED
        return trace

    held = ScheduledItem.objects.filter(kind=inbox_services.RELEASE, key=inbox_services.release_key(notification_id)).first()
    if held is not None:  # a notification with a send_at still ahead
        task = NotificationTask.decode(held.payload["task"].encode())
        trace.status, trace.recipient, trace.accepted_at = TraceStatus.SCHEDULED, task.recipient, held.created_at
        trace.reason = f"held until {held.due_at.isoformat()}"
        return trace
    event = _pending_send_event(notification_id)
    if event is not None:
        trace.status, trace.recipient, trace.accepted_at = TraceStatus.ACCEPTED, event.key, event.created_at
        if match := _CAMPAIGN_TASK_ID.fullmatch(notification_id):
            trace.campaign_id = int(match[1]) if int(match[1]) < 2**63 else None
        return trace
    if match := _CAMPAIGN_TASK_ID.fullmatch(notification_id):
        campaign_id, recipient = int(match[1]), match[2]
        if campaign_id < 2**63:
            campaign = Campaign.objects.filter(id=campaign_id, status__in=(
                CampaignStatus.SCHEDULED, *_CAMPAIGN_ACCEPTED, CampaignStatus.CANCELLED)).first()
            if campaign is not None and campaign_selectors.campaign_targets(campaign=campaign, external_id=recipient):
                if campaign.status == CampaignStatus.CANCELLED:  # cancelled before it reached this recipient
                    trace.status, trace.reason = TraceStatus.CANCELLED, CAMPAIGN_CANCELLED.reason
                elif campaign.status == CampaignStatus.SCHEDULED:  # (no zone of it released yet)
                    trace.status = TraceStatus.SCHEDULED
                else:
                    trace.status = TraceStatus.ACCEPTED
                trace.recipient, trace.campaign_id = recipient, campaign_id
                trace.accepted_at = campaign.created_at
                return trace
    if letters:
        trace.status, trace.reason = TraceStatus.DEAD_LETTERED, letters[-1].reason
        return trace
    return None


def _settled_status(ledger: Delivery, channels: list[ChannelTrace]) -> tuple[str, str]:
    if ledger.outcome == DeliveryOutcome.SKIPPED:
        if ledger.reason == CANCELLED:
            return TraceStatus.CANCELLED, ledger.reason
        return TraceStatus.SKIPPED, ledger.reason
    if ledger.outcome == DeliveryOutcome.FAILED:
        return TraceStatus.DEAD_LETTERED, ledger.reason
    if ledger.outcome == DeliveryOutcome.DIGESTED:
        event = DigestEvent.objects.filter(notification_id=ledger.notification_id).select_related("window").first()
        if event is None:
            return TraceStatus.DIGESTED, ledger.reason
        window = event.window
        when = f"closed at {window.closed_at.isoformat()}" if window.closed_at else f"open until {window.closes_at.isoformat()}"
        return TraceStatus.DIGESTED, f"into {window.notification_id} ({window.key}), {when}"
    if dead := [c for c in channels if c.status == ChannelDeliveryStatus.DEAD]:
        return TraceStatus.DEAD_LETTERED, "; ".join(f"{c.channel}: {c.last_error}" for c in dead)[:500]
    if waiting := [c for c in channels if c.status in (ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING)]:
        held = [f"{c.channel}: {c.held}" for c in waiting if c.held]
        return TraceStatus.SCHEDULED, "; ".join([ledger.reason] * bool(ledger.reason) + held)[:500]
    return TraceStatus.DELIVERED, ledger.reason  # empty, or the channels a frequency cap held back


def _pending_send_event(notification_id: str) -> OutboxEvent | None:
    """The newest outbox event publishing this notification's task (our encoding starts with
    `{"v":1,"id":<id>,`), or None."""
    prefix = b'{"v":%d,"id":%s,' % (SCHEMA_VERSION, orjson.dumps(notification_id))
    return (
        OutboxEvent.objects.filter(topic=topics.SEND.logical)
        .annotate(head=Substr("payload", 1, len(prefix), output_field=BinaryField()))
        .filter(head=prefix)
        .only("key", "created_at")
        .order_by("-id")
        .first()
    )


def campaign_notification_settled(campaign_id: int) -> Exists:
    """A condition on Recipient: its notification of this campaign has a ledger row."""
    return Exists(Delivery.objects.filter(notification_id=Concat(
        Value(f"{campaign_id}:"), OuterRef("external_id"), output_field=CharField())))
