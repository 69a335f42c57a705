"""The worker's database side: settling a batch of tasks, recording channel outcomes, dead letters."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns import services as campaign_services
from campaigns.models import CampaignStatus
from delivery import broker, metrics
from delivery.channels import ChannelError, Outgoing, channels_for
from delivery.failures import safe_text
from delivery.messages import (
    DEAD_LETTER_PAYLOAD_BYTES,
    CampaignCreated,
    ChannelRetry,
    Envelope,
    InvalidRecord,
    NotificationTask,
    Origin,
)
from delivery.models import (
    ChannelDelivery,
    ChannelDeliveryStatus,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStatus,
    Delivery,
    DeliveryOutcome,
    OutboxEvent,
)
from delivery.outbox import outbox_enqueue, outbox_enqueue_many
from inbox import services as inbox_services
from notifications_project.db import bulk_insert

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelSend:
    """One attempt of one external channel for one notification."""

    channel_delivery_id: int
    channel: str
    attempt: int
    outgoing: Outgoing


@dataclass
class BatchResult:
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0
    sends: list[ChannelSend] = field(default_factory=list)
    by_outcome_and_kind: Counter = field(default_factory=Counter)


def deliveries_settle(*, tasks: Sequence[NotificationTask], origins: Mapping[str, Origin] | None = None) -> BatchResult:
    """Deliver each task at most once, whatever happened before.

    In one transaction: resolve recipients (user-to-user tasks create theirs; campaign tasks whose
    recipient is gone are skipped), claim each notification id in the ledger, write the inbox rows of
    the claimed ones with a `pending` ledger row per external channel, and add the batch's counts to
    their campaigns. A task whose id is already in the ledger changes nothing, except that its
    channel sends still pending (a worker died before them) are handed back. The caller commits its
    Kafka offsets only after this returns and the returned sends are recorded.
    """
    first_of_id: dict[str, NotificationTask] = {}
    for task in tasks:
        first_of_id.setdefault(task.notification_id, task)  # the first wins, in a batch as across batches
    unique_tasks = list(first_of_id.values())
    result = BatchResult(duplicates=len(tasks) - len(unique_tasks))
    if not unique_tasks:
        return result
    origins = origins or {}
    now = timezone.now()

    with transaction.atomic():
        recipients = inbox_services.recipients_resolve(
            external_ids={t.recipient for t in unique_tasks},
            create={t.recipient for t in unique_tasks if t.campaign_id is None},
        )
        campaigns = campaign_selectors.campaigns_by_id(ids={t.campaign_id for t in unique_tasks if t.campaign_id})
        preferences = inbox_services.preferences_of(recipient_pks=[r.pk for r in recipients.values()])
        gateway = settings.PUSH_GATEWAY_URL

        outcomes: dict[str, tuple[str, str]] = {}
        routes: dict[str, tuple[bool, list[str]]] = {}  # notification id -> (in-app?, external channels)
        for task in unique_tasks:
            campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
            recipient = recipients.get(task.recipient)
            if task.campaign_id and campaign is None:
                outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "campaign not found")
            elif campaign is not None and campaign.status == CampaignStatus.CANCELLED:
                outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "campaign cancelled")
            elif recipient is None:
                outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "recipient deleted")
            else:
                kind = campaign.kind if campaign else task.kind
                kinds, channels = preferences.get(recipient.pk, _NO_OPT_OUTS)
                in_app = channels.get("in_app", True)
                external = _external_channels(recipient, channels, gateway)
                if kinds.get(kind) is False:
                    outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, f"opted out of {kind}")
                elif not in_app and not external:
                    outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "opted out of every channel")
                else:
                    outcomes[task.notification_id] = (DeliveryOutcome.DELIVERED, "")
                    routes[task.notification_id] = (in_app, external)

        claimed = _ledger_claim(tasks=unique_tasks, outcomes=outcomes, settled_at=now)
        result.duplicates += len(unique_tasks) - len(claimed)

        inbox_rows: list[tuple] = []
        channel_rows: list[tuple[Outgoing, str]] = []
        progress: defaultdict[int, Counter] = defaultdict(Counter)
        for task in unique_tasks:
            if task.notification_id not in claimed:
                continue
            outcome = outcomes[task.notification_id][0]
            setattr(result, outcome, getattr(result, outcome) + 1)
            campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
            result.by_outcome_and_kind[(outcome, campaign.kind if campaign else task.kind or "unknown")] += 1
            if task.campaign_id:
                progress[task.campaign_id][outcome] += 1
            if outcome != DeliveryOutcome.DELIVERED:
                continue
            if campaign:
                content = (campaign.kind, "", campaign.title, campaign.body, campaign.data, campaign.id, campaign.created_at)
            else:
                content = (task.kind, task.sender, "", task.message, task.data, None, datetime.fromisoformat(task.created_at))
            recipient = recipients[task.recipient]
            in_app, external = routes[task.notification_id]
            if in_app:
                inbox_rows.append((task.notification_id, recipient.pk, *content, now))
            if external:
                kind, sender, title, message, data, campaign_id, created_at = content
                item = Outgoing(
                    notification_id=task.notification_id, recipient=task.recipient, kind=kind, message=message,
                    title=title, sender=sender, data=data, campaign_id=campaign_id, created_at=created_at.isoformat(),
                    email=recipient.email, push_endpoint=recipient.push_endpoint, push_secrets=recipient.push_secrets,
                )
                channel_rows += [(item, channel) for channel in external]
        inbox_services.notifications_insert(rows=inbox_rows)
        result.sends = _channel_deliveries_create(channel_rows=channel_rows, origins=origins, now=now)
        result.sends += _pending_sends_of(notification_ids=[t.notification_id for t in unique_tasks if t.notification_id not in claimed])
        for campaign_id, counts in progress.items():
            campaign_services.campaign_progress_add(
                campaign_id=campaign_id,
                delivered=counts[DeliveryOutcome.DELIVERED],
                skipped=counts[DeliveryOutcome.SKIPPED],
                failed=counts[DeliveryOutcome.FAILED],
            )
    return result


_NO_OPT_OUTS: tuple[dict, dict] = ({}, {})


def _external_channels(recipient, opt_outs: dict, gateway: str) -> list[str]:
    """The external channels a recipient has and has not opted out of (most have none: fast path)."""
    if not (recipient.email or recipient.push_endpoint or gateway):
        return []
    return [c for c in channels_for(push_endpoint=recipient.push_endpoint, email=recipient.email) if opt_outs.get(c, True)]


def _ledger_claim(*, tasks: Sequence[NotificationTask], outcomes: dict[str, tuple[str, str]], settled_at) -> set[str]:
    """Insert ledger rows; returns the ids this call inserted. The primary key arbitrates: a row
    already there (or being inserted by a concurrent transaction, which we then wait for) is not ours.
    """
    rows = [(t.notification_id, t.recipient, t.campaign_id, *outcomes[t.notification_id], settled_at) for t in tasks]
    inserted = bulk_insert(
        model=Delivery,
        columns=("notification_id", "recipient_external_id", "campaign_id", "outcome", "reason", "settled_at"),
        rows=rows,
        ignore_conflicts_on="notification_id",
        returning="notification_id",
    )
    return {row[0] for row in inserted}


def _channel_deliveries_create(*, channel_rows: list[tuple[Outgoing, str]], origins: Mapping[str, Origin], now) -> list[ChannelSend]:
    rows = []
    for item, channel in channel_rows:
        origin = origins.get(item.notification_id)
        rows.append((
            item.notification_id, channel, item.recipient, item.campaign_id, ChannelDeliveryStatus.PENDING, 0, "", now,
            item.content(), origin.topic if origin else "", origin.partition if origin else None,
            origin.offset if origin else None,
        ))
    inserted = bulk_insert(
        model=ChannelDelivery,
        columns=("notification_id", "channel", "recipient_external_id", "campaign_id", "status", "attempts",
                 "last_error", "updated_at", "content", "origin_topic", "origin_partition", "origin_offset"),
        rows=rows,
        returning=("id", "notification_id", "channel"),
    )
    ids = {(notification_id, channel): pk for pk, notification_id, channel in inserted}
    return [ChannelSend(ids[(item.notification_id, channel)], channel, 1, item) for item, channel in channel_rows]


def _pending_sends_of(*, notification_ids: list[str]) -> list[ChannelSend]:
    """Channel sends of already-settled notifications that never ran (the worker died before them)."""
    if not notification_ids:
        return []
    pending = list(ChannelDelivery.objects.filter(notification_id__in=notification_ids, status=ChannelDeliveryStatus.PENDING))
    return _sends_for(pending)


def channel_retries_claim(*, retries: Sequence[ChannelRetry]) -> list[ChannelSend]:
    """The retries still wanted: their channel delivery is retrying and this is its next attempt."""
    wanted = {(r.notification_id, r.channel): r.attempt for r in retries}
    rows = ChannelDelivery.objects.filter(
        notification_id__in={r.notification_id for r in retries}, status=ChannelDeliveryStatus.RETRYING
    )
    return _sends_for([row for row in rows if wanted.get((row.notification_id, row.channel)) == row.attempts + 1])


def _sends_for(rows: list[ChannelDelivery]) -> list[ChannelSend]:
    """What to send, with the recipient's current address; a recipient deleted meanwhile is skipped."""
    recipients = inbox_services.recipients_resolve(external_ids={r.recipient_external_id for r in rows}, create=set())
    sends, gone = [], []
    for row in rows:
        recipient = recipients.get(row.recipient_external_id)
        if recipient is None:
            gone.append(row.id)
            continue
        outgoing = Outgoing.from_content(row.content, email=recipient.email, push_endpoint=recipient.push_endpoint,
                                         push_secrets=recipient.push_secrets)
        sends.append(ChannelSend(row.id, row.channel, row.attempts + 1, outgoing))
    if gone:
        ChannelDelivery.objects.filter(id__in=gone).update(
            status=ChannelDeliveryStatus.SKIPPED, last_error="recipient deleted", updated_at=timezone.now()
        )
    return sends


def retry_delay(*, attempt: int, base: float, factor: float, rng: random.Random = random) -> float:
    """Seconds before attempt `attempt + 1` after attempt `attempt` failed: base * factor**(attempt-1),
    with +-20 % jitter so that retries of one outage do not arrive together."""
    return base * factor ** (attempt - 1) * rng.uniform(0.8, 1.2)


@dataclass
class OutcomeCounts:
    sent: int = 0
    retried: int = 0
    dead: int = 0


def channel_outcomes_record(*, outcomes: Sequence[tuple[ChannelSend, ChannelError | None]]) -> OutcomeCounts:
    """Record a batch of channel attempts in one transaction: sent; a retry scheduled on the retry
    topic (through the outbox, so it exists exactly when the row says `retrying`); or a dead letter,
    mirrored to the dead-letter topic the same way."""
    counts = OutcomeCounts()
    if not outcomes:
        return counts
    now = timezone.now()
    rows = ChannelDelivery.objects.in_bulk([send.channel_delivery_id for send, _ in outcomes])
    events: list[OutboxEvent] = []
    dead_letters: list[DeadLetter] = []
    for send, error in outcomes:
        row = rows[send.channel_delivery_id]
        row.attempts, row.updated_at = send.attempt, now
        if error is None:
            row.status, row.last_error = ChannelDeliveryStatus.SENT, ""
            counts.sent += 1
            continue
        row.last_error = safe_text(error, 500)
        if error.transient and send.attempt <= settings.RETRY_MAX_RETRIES:
            row.status = ChannelDeliveryStatus.RETRYING
            delay = retry_delay(attempt=send.attempt, base=settings.RETRY_BACKOFF_BASE_SECONDS,
                                factor=settings.RETRY_BACKOFF_FACTOR)
            retry = ChannelRetry(row.notification_id, row.channel, row.recipient_external_id, send.attempt + 1,
                                 time.time() + delay)
            events.append(OutboxEvent(topic=broker.NOTIFICATIONS_RETRY, key=row.recipient_external_id, payload=retry.encode()))
            counts.retried += 1
            continue
        row.status = ChannelDeliveryStatus.DEAD
        reason = DeadLetterReason.RETRIES_EXHAUSTED if error.transient else DeadLetterReason.PERMANENT_FAILURE
        payload = ChannelRetry(row.notification_id, row.channel, row.recipient_external_id, 1, 0).encode()
        dead_letters.append(DeadLetter(
            reason=reason, error=safe_text(error), notification_id=row.notification_id, channel=row.channel,
            recipient_external_id=row.recipient_external_id, campaign_id=row.campaign_id, attempts=send.attempt,
            original_topic=row.origin_topic, original_partition=row.origin_partition,
            original_offset=row.origin_offset, payload=payload, created_at=now,
        ))
        counts.dead += 1
    with transaction.atomic():
        ChannelDelivery.objects.bulk_update(rows.values(), ["status", "attempts", "last_error", "updated_at"], batch_size=500)
        _dead_letters_store(dead_letters, events)
        outbox_enqueue_many(events=events)
    for letter in dead_letters:
        logger.warning("dead letter: %s via %s after %d attempt(s): %s", letter.notification_id, letter.channel,
                       letter.attempts, letter.error, extra=_ids(letter.notification_id, letter.campaign_id,
                                                                  letter.recipient_external_id))
    for event in events:
        if event.topic == broker.NOTIFICATIONS_RETRY:
            retry = ChannelRetry.decode(bytes(event.payload))
            logger.info("retry %d of %s via %s scheduled", retry.attempt, retry.notification_id, retry.channel,
                        extra=_ids(retry.notification_id, None, retry.recipient))
    return counts


def _ids(notification_id: str, campaign_id: int | None, recipient: str) -> dict:
    """The ids a log line about one notification carries (fields of their own in JSON logs)."""
    return {"notification_id": notification_id, "campaign_id": campaign_id, "recipient": recipient}


def dead_letters_record_invalid(*, records: Sequence[InvalidRecord]) -> None:
    """Records that are not messages of ours go to the dead-letter topic (and table) with the reason."""
    now = timezone.now()
    letters = [
        DeadLetter(
            reason=DeadLetterReason.INVALID_PAYLOAD, error=r.error, original_topic=r.origin.topic,
            original_partition=r.origin.partition, original_offset=r.origin.offset,
            payload=(r.value or b"")[:DEAD_LETTER_PAYLOAD_BYTES], created_at=now,
        )
        for r in records
    ]
    events: list[OutboxEvent] = []
    with transaction.atomic():
        _dead_letters_store(letters, events, keys=[(r.key or b"").decode(errors="replace") for r in records])
        outbox_enqueue_many(events=events)
    for r in records:
        logger.warning("dead letter: invalid payload at %s[%d]@%d: %s", r.origin.topic, r.origin.partition, r.origin.offset, r.error)


def envelope_dead_letter(*, envelope: Envelope, error: str) -> bool:
    """Dead-letter one message whose handling failed on its own (reason `processing failed`), in
    one transaction with what settles it, so that a repeat after a crash writes nothing twice: a task
    claims its id in the ledger as `failed` (and counts as failed in its campaign); a retry marks its
    channel delivery dead. Returns whether a dead letter was written."""
    message, origin = envelope.message, envelope.origin
    letter = DeadLetter(
        reason=DeadLetterReason.PROCESSING_FAILED, error=error, attempts=1, original_topic=origin.topic,
        original_partition=origin.partition, original_offset=origin.offset,
        payload=(envelope.raw or b"")[:DEAD_LETTER_PAYLOAD_BYTES], created_at=timezone.now(),
    )
    with transaction.atomic():
        if isinstance(message, NotificationTask):
            task = dataclasses.replace(message, notification_id=safe_text(message.notification_id, 160),
                                       recipient=safe_text(message.recipient, 128))
            outcome = (DeliveryOutcome.FAILED, safe_text(f"processing failed: {error}", 200))
            if not _ledger_claim(tasks=[task], outcomes={task.notification_id: outcome}, settled_at=letter.created_at):
                return False  # settled already (this is a repeat)
            if task.campaign_id:
                campaign_services.campaign_progress_add(campaign_id=task.campaign_id, failed=1)
            letter.notification_id, letter.recipient_external_id, letter.campaign_id = (
                task.notification_id, task.recipient, task.campaign_id)
        elif isinstance(message, ChannelRetry):
            if not ChannelDelivery.objects.filter(
                notification_id=message.notification_id, channel=message.channel,
                status=ChannelDeliveryStatus.RETRYING, attempts=message.attempt - 1,
            ).update(status=ChannelDeliveryStatus.DEAD, last_error=safe_text(error, 500), updated_at=letter.created_at):
                return False
            letter.notification_id, letter.channel, letter.recipient_external_id = (
                message.notification_id, message.channel, message.recipient)
        elif isinstance(message, CampaignCreated):
            letter.campaign_id = message.campaign_id
        events: list[OutboxEvent] = []
        _dead_letters_store([letter], events)
        outbox_enqueue_many(events=events)
    logger.warning("dead letter: %s failed: %s", letter.notification_id or origin, error,
                   extra=_ids(letter.notification_id, letter.campaign_id, letter.recipient_external_id))
    return True


def envelope_dead_letter_raw(*, envelope: Envelope, error: str) -> None:
    """The last resort when even `envelope_dead_letter` fails on a record's data: a dead letter with
    the record as consumed and where it was read, and nothing taken from its content."""
    origin = envelope.origin
    letter = DeadLetter(reason=DeadLetterReason.PROCESSING_FAILED, error=error, attempts=1, original_topic=origin.topic,
                        original_partition=origin.partition, original_offset=origin.offset,
                        payload=(envelope.raw or b"")[:DEAD_LETTER_PAYLOAD_BYTES], created_at=timezone.now())
    events: list[OutboxEvent] = []
    with transaction.atomic():
        _dead_letters_store([letter], events)
        outbox_enqueue_many(events=events)
    logger.warning("dead letter: record %s[%d]@%d failed: %s", origin.topic, origin.partition, origin.offset, error)


def _dead_letters_store(letters: list[DeadLetter], events: list[OutboxEvent], keys: list[str] | None = None) -> None:
    """Save dead letters and add their dead-letter-topic records (payload, provenance in headers) to events.

    Their text comes from records anyone could produce: made storable first (no NUL, no lone
    surrogate, within each column's length), so that writing a dead letter cannot fail on it."""
    for letter in letters:
        for name in ("error", "notification_id", "channel", "recipient_external_id", "original_topic"):
            field = DeadLetter._meta.get_field(name)
            setattr(letter, name, safe_text(getattr(letter, name), field.max_length))
    keys = [safe_text(k, 200) for k in keys] if keys else None
    DeadLetter.objects.bulk_create(letters)
    for letter in letters:
        metrics.DEAD_LETTERS.labels(letter.reason, letter.channel or "none").inc()
    for i, letter in enumerate(letters):
        headers = {
            "reason": letter.reason, "error": letter.error[:1000], "attempts": letter.attempts,
            "original_topic": letter.original_topic, "original_partition": letter.original_partition,
            "original_offset": letter.original_offset, "notification_id": letter.notification_id,
            "channel": letter.channel,
        }
        key = keys[i] if keys else letter.recipient_external_id
        events.append(OutboxEvent(topic=broker.NOTIFICATIONS_DLQ, key=key, payload=bytes(letter.payload),
                                  headers={k: v for k, v in headers.items() if v not in ("", None)}))


def dead_letter_replay(*, dead_letter: DeadLetter) -> str:
    """Publish a dead-lettered task again; returns what happened. Replaying a send that was delivered
    meanwhile sends nothing (its channel row says sent; the ledger holds every notification id)."""
    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update().get(id=dead_letter.id)
        if letter.status != DeadLetterStatus.DEAD:
            return f"dead letter #{letter.id} was already {letter.status}"
        letter.status, letter.resolved_at = DeadLetterStatus.REPLAYED, timezone.now()
        letter.save(update_fields=["status", "resolved_at"])
        if not letter.channel:
            if letter.reason == DeadLetterReason.PROCESSING_FAILED and letter.notification_id:
                # Its failure was recorded in the ledger: remove that entry, or the replay would be a repeat.
                removed, _ = Delivery.objects.filter(notification_id=letter.notification_id,
                                                     outcome=DeliveryOutcome.FAILED).delete()
                if removed and letter.campaign_id:
                    campaign_services.campaign_progress_add(campaign_id=letter.campaign_id, failed=-1)
            logical_topic = letter.original_topic.removeprefix(settings.KAFKA_TOPIC_PREFIX)
            outbox_enqueue(topic=logical_topic, key=letter.recipient_external_id or "replay", payload=bytes(letter.payload))
            return f"dead letter #{letter.id}: record re-published to {logical_topic}"
        delivery = ChannelDelivery.objects.select_for_update().filter(
            notification_id=letter.notification_id, channel=letter.channel
        ).first()
        if delivery is None or delivery.status in (ChannelDeliveryStatus.SENT, ChannelDeliveryStatus.SKIPPED):
            return f"dead letter #{letter.id}: {letter.channel} delivery already settled; nothing sent"
        delivery.status, delivery.attempts, delivery.updated_at = ChannelDeliveryStatus.RETRYING, 0, timezone.now()
        delivery.save(update_fields=["status", "attempts", "updated_at"])
        retry = ChannelRetry(letter.notification_id, letter.channel, letter.recipient_external_id, 1, time.time())
        outbox_enqueue(topic=broker.NOTIFICATIONS_RETRY, key=letter.recipient_external_id, payload=retry.encode())
        return f"dead letter #{letter.id}: {letter.channel} delivery of {letter.notification_id} queued again"


def dead_letters_discard(*, ids: Sequence[int]) -> int:
    return DeadLetter.objects.filter(id__in=ids, status=DeadLetterStatus.DEAD).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now()
    )
