"""The worker's database side: settling a batch of tasks, recording channel outcomes, dead letters."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns import services as campaign_services
from core import clock, scheduler, topics
from core.db import bulk_insert
from core.dead_letters import dead_letter_of, dead_letter_write, dead_letters_store
from core.failures import backoff_delay, safe_text
from core.messages import (
    Channel,
    ChannelRetry,
    Envelope,
    NotificationContent,
    NotificationTask,
    Origin,
)
from core.models import DeadLetter, DeadLetterReason, DeadLetterStatus, OutboxEvent
from core.outbox import outbox_enqueue, outbox_enqueue_many
from delivery.channels import ChannelError, Outgoing
from delivery.models import (
    ChannelDelivery,
    ChannelDeliveryStatus,
    Delivery,
    DeliveryOutcome,
)
from delivery.routing import NO_OPT_OUTS, Route, route
from inbox import services as inbox_services

logger = logging.getLogger(__name__)


# The scheduler's kind for channel sends: one item per channel delivery, due now or at its next retry.
SEND = "channel.send"


@dataclass(frozen=True)
class ChannelSend:
    """One attempt of one external channel for one notification, released by the scheduler."""

    channel_delivery_id: int
    channel: str
    attempt: int
    outgoing: Outgoing
    item: scheduler.Due


@dataclass
class BatchResult:
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0
    sends_scheduled: int = 0
    by_outcome_and_kind: Counter = field(default_factory=Counter)


def deliveries_settle(*, tasks: Sequence[NotificationTask], origins: Mapping[str, Origin] | None = None) -> BatchResult:
    """Deliver each task at most once, whatever happened before.

    In one transaction: resolve recipients (user-to-user tasks create theirs; campaign tasks whose
    recipient is gone are skipped), route each task (delivery/routing.py), claim each notification
    id in the ledger, write the inbox rows of the claimed ones with a `pending` ledger row per
    external channel, and add the batch's counts to their campaigns. A task whose id is already in
    the ledger changes nothing, except that its channel sends still pending (a worker died before
    them) are handed back. The caller commits its Kafka offsets only after this returns and the
    returned sends are recorded.
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

        routes: dict[str, Route] = {}
        for task in unique_tasks:
            campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
            recipient = recipients.get(task.recipient)
            routes[task.notification_id] = route(
                campaign_task=bool(task.campaign_id),
                campaign_status=campaign.status if campaign else None,
                recipient=recipient,
                kind=campaign.kind if campaign else task.kind,
                opt_outs=preferences.get(recipient.pk, NO_OPT_OUTS) if recipient else NO_OPT_OUTS,
                gateway=gateway,
            )

        claimed = _ledger_claim(
            entries=[(t, r.outcome, r.reason) for t in unique_tasks for r in (routes[t.notification_id],)],
            settled_at=now,
        )
        result.duplicates += len(unique_tasks) - len(claimed)

        campaign_contents = {pk: NotificationContent.of_campaign(c) for pk, c in campaigns.items()}
        inbox_rows: list[inbox_services.InboxRow] = []
        channel_rows: list[tuple[Outgoing, str]] = []
        progress: defaultdict[int, Counter] = defaultdict(Counter)
        for task in unique_tasks:
            if task.notification_id not in claimed:
                continue
            decision = routes[task.notification_id]
            outcome = decision.outcome
            setattr(result, outcome, getattr(result, outcome) + 1)
            campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
            result.by_outcome_and_kind[(outcome, campaign.kind if campaign else task.kind or "unknown")] += 1
            if task.campaign_id:
                progress[task.campaign_id][outcome] += 1
            if not decision.delivered:
                continue
            content = campaign_contents[campaign.pk] if campaign else NotificationContent.of_task(task)
            recipient = recipients[task.recipient]
            if decision.in_app:
                inbox_rows.append(inbox_services.InboxRow(task.notification_id, recipient.pk, content))
            if decision.external:
                item = Outgoing(notification_id=task.notification_id, recipient=task.recipient, content=content,
                                email=recipient.email, push_endpoint=recipient.push_endpoint,
                                push_secrets=recipient.push_secrets)
                channel_rows += [(item, channel) for channel in decision.external]
        inbox_services.notifications_insert(rows=inbox_rows, delivered_at=now)
        result.sends_scheduled = _channel_deliveries_create(channel_rows=channel_rows, origins=origins, now=now)
        for campaign_id, counts in progress.items():
            campaign_services.campaign_progress_add(
                campaign_id=campaign_id,
                delivered=counts[DeliveryOutcome.DELIVERED],
                skipped=counts[DeliveryOutcome.SKIPPED],
                failed=counts[DeliveryOutcome.FAILED],
            )
    return result


def _ledger_claim(*, entries: Sequence[tuple[NotificationTask, str, str]], settled_at) -> set[str]:
    """Insert ledger rows, one per (task, outcome, reason); returns the ids this call inserted. The
    primary key arbitrates: a row already there (or being inserted by a concurrent transaction, which
    we then wait for) is not ours.
    """
    rows = [(t.notification_id, t.recipient, t.campaign_id, outcome, reason) for t, outcome, reason in entries]
    inserted = bulk_insert(
        model=Delivery,
        columns=("notification_id", "recipient_external_id", "campaign_id", "outcome", "reason"),
        rows=rows,
        same={"settled_at": settled_at},
        ignore_conflicts_on="notification_id",
        returning="notification_id",
    )
    return {row[0] for row in inserted}


def _channel_deliveries_create(*, channel_rows: list[tuple[Outgoing, str]], origins: Mapping[str, Origin], now) -> int:
    """A `pending` channel delivery per send, each with its scheduled item (due now); returns how many."""
    if not channel_rows:
        return 0
    rows = []
    for item, channel in channel_rows:
        origin = origins.get(item.notification_id)
        rows.append((
            item.notification_id, channel, item.recipient, item.content.campaign_id, ChannelDeliveryStatus.PENDING, 0, "", now,
            item.payload(), origin.topic if origin else "", origin.partition if origin else None,
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
    due = clock.now()
    return scheduler.schedule(*(
        _send_item(ids[(item.notification_id, channel)], due_at=due, lane=send_lane(channel, item))
        for item, channel in channel_rows
    ))


def send_key(channel_delivery_id: int) -> str:
    """The scheduled item of a channel delivery's next attempt."""
    return f"send:{channel_delivery_id}"


def _send_item(channel_delivery_id: int, *, due_at: datetime, lane: str) -> scheduler.Item:
    return scheduler.Item(kind=SEND, key=send_key(channel_delivery_id), due_at=due_at, lane=lane,
                          payload={"channel_delivery": channel_delivery_id})


def send_lane(channel: str, outgoing: Outgoing) -> str:
    """Sends to one endpoint host (and port) share a lane, a concurrency limit; email shares one."""
    if channel == Channel.EMAIL:
        return Channel.EMAIL.value
    return urlsplit(outgoing.push_endpoint or settings.PUSH_GATEWAY_URL).netloc.rpartition("@")[2].lower()[:255]


def channel_sends_of(*, items: Sequence[scheduler.Due]) -> list[ChannelSend]:
    """The sends the released items stand for. An item whose channel delivery is settled already (or
    gone, or whose recipient was deleted) is done at once and has no send."""
    by_id = {item.payload.get("channel_delivery"): item for item in items}
    rows = [row for row in ChannelDelivery.objects.filter(id__in=[k for k in by_id if isinstance(k, int)])
            if row.status in (ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING)]
    sends = _sends_for(rows, items=by_id)
    wanted = {send.channel_delivery_id for send in sends}
    scheduler.done(item for key, item in by_id.items() if key not in wanted)
    return sends


def channel_retries_schedule(*, retries: Sequence[ChannelRetry]) -> int:
    """Retries read from the retry topic (written there before sends moved to the scheduler, or by
    another producer): the ones still wanted (their channel delivery is retrying and this is its
    next attempt) are scheduled when due. Returns how many."""
    wanted = {(r.notification_id, r.channel): r for r in retries}
    rows = ChannelDelivery.objects.filter(
        notification_id__in={r.notification_id for r in retries}, status=ChannelDeliveryStatus.RETRYING
    )
    items = []
    for row in rows:
        retry = wanted.get((row.notification_id, row.channel))
        if retry is not None and retry.attempt == row.attempts + 1:
            due_at = datetime.fromtimestamp(retry.due_at, tz=dt_timezone.utc)
            items.append(_send_item(row.id, due_at=due_at, lane=""))
    return scheduler.schedule(*items)


def _sends_for(rows: list[ChannelDelivery], *, items: Mapping[int, scheduler.Due]) -> list[ChannelSend]:
    """What to send, with the recipient's current address; a recipient deleted meanwhile is skipped."""
    recipients = inbox_services.recipients_resolve(external_ids={r.recipient_external_id for r in rows}, create=set())
    sends, gone = [], []
    for row in rows:
        recipient = recipients.get(row.recipient_external_id)
        if recipient is None:
            gone.append(row.id)
            continue
        outgoing = Outgoing(notification_id=row.notification_id, recipient=row.recipient_external_id,
                            content=NotificationContent.of_payload(row.content), email=recipient.email,
                            push_endpoint=recipient.push_endpoint, push_secrets=recipient.push_secrets)
        sends.append(ChannelSend(row.id, row.channel, row.attempts + 1, outgoing, items[row.id]))
    if gone:
        ChannelDelivery.objects.filter(id__in=gone).update(
            status=ChannelDeliveryStatus.SKIPPED, last_error="recipient deleted", updated_at=timezone.now()
        )
    return sends


@dataclass
class OutcomeCounts:
    sent: int = 0
    retried: int = 0
    dead: int = 0


def channel_outcomes_record(*, outcomes: Sequence[tuple[ChannelSend, ChannelError | None]]) -> OutcomeCounts:
    """Record a batch of channel attempts in one transaction: sent (its item done); a retry (its
    item due again after the backoff); or a dead letter (its item done), mirrored to the dead-letter
    topic through the outbox. A send whose item another holder has taken since (its lease ran out)
    is left to that holder."""
    counts = OutcomeCounts()
    if not outcomes:
        return counts
    now = clock.now()
    dead_letters: list[DeadLetter] = []
    events: list[OutboxEvent] = []
    with transaction.atomic():
        rows = ChannelDelivery.objects.select_for_update().in_bulk([send.channel_delivery_id for send, _ in outcomes])
        finished: list[scheduler.Due] = []
        changed = []
        for send, error in outcomes:
            row = rows.get(send.channel_delivery_id)
            if row is None:
                continue
            row.attempts, row.updated_at = send.attempt, now
            if error is None:
                row.status, row.last_error = ChannelDeliveryStatus.SENT, ""
                counts.sent += 1
                finished.append(send.item)
            elif error.transient and send.attempt <= settings.RETRY_MAX_RETRIES:
                delay = backoff_delay(attempt=send.attempt, first=settings.RETRY_BACKOFF_BASE_SECONDS,
                                      factor=settings.RETRY_BACKOFF_FACTOR)
                if not scheduler.reschedule(send.item, due_at=now + timedelta(seconds=delay)):
                    continue  # another holder has it
                row.status, row.last_error = ChannelDeliveryStatus.RETRYING, safe_text(error, 500)
                counts.retried += 1
                logger.info("retry %d of %s via %s in %.1f s", send.attempt + 1, row.notification_id, row.channel, delay,
                            extra=_ids(row.notification_id, row.campaign_id, row.recipient_external_id))
            else:
                row.status, row.last_error = ChannelDeliveryStatus.DEAD, safe_text(error, 500)
                reason = DeadLetterReason.RETRIES_EXHAUSTED if error.transient else DeadLetterReason.PERMANENT_FAILURE
                payload = ChannelRetry(row.notification_id, row.channel, row.recipient_external_id, 1, 0).encode()
                dead_letters.append(DeadLetter(
                    reason=reason, error=safe_text(error), notification_id=row.notification_id, channel=row.channel,
                    recipient_external_id=row.recipient_external_id, campaign_id=row.campaign_id, attempts=send.attempt,
                    original_topic=row.origin_topic, original_partition=row.origin_partition,
                    original_offset=row.origin_offset, payload=payload, created_at=now,
                ))
                counts.dead += 1
                finished.append(send.item)
            changed.append(row)
        scheduler.done(finished)
        ChannelDelivery.objects.bulk_update(changed, ["status", "attempts", "last_error", "updated_at"], batch_size=500)
        dead_letters_store(dead_letters, events)
        outbox_enqueue_many(events=events)
    for letter in dead_letters:
        logger.warning("dead letter: %s via %s after %d attempt(s): %s", letter.notification_id, letter.channel,
                       letter.attempts, letter.error, extra=_ids(letter.notification_id, letter.campaign_id,
                                                                  letter.recipient_external_id))
    return counts


def _ids(notification_id: str, campaign_id: int | None, recipient: str) -> dict:
    """The ids a log line about one notification carries (fields of their own in JSON logs)."""
    return {"notification_id": notification_id, "campaign_id": campaign_id, "recipient": recipient}


def envelope_dead_letter(*, envelope: Envelope, error: str) -> bool:
    """Dead-letter one message whose handling failed on its own (reason `processing failed`), in
    one transaction with what settles it, so that a repeat after a crash writes nothing twice: a task
    claims its id in the ledger as `failed` (and counts as failed in its campaign); a retry marks its
    channel delivery dead. Returns whether a dead letter was written."""
    message = envelope.message
    letter = dead_letter_of(envelope=envelope, error=error)
    with transaction.atomic():
        if isinstance(message, NotificationTask):
            task = dataclasses.replace(message, notification_id=safe_text(message.notification_id, 160),
                                       recipient=safe_text(message.recipient, 128))
            reason = safe_text(f"processing failed: {error}", 200)
            if not _ledger_claim(entries=[(task, DeliveryOutcome.FAILED, reason)], settled_at=letter.created_at):
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
        dead_letter_write(letter=letter)
    logger.warning("dead letter: %s failed: %s", letter.notification_id or envelope.origin, error,
                   extra=_ids(letter.notification_id, letter.campaign_id, letter.recipient_external_id))
    return True


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
            topic = topics.topic_of(letter.original_topic)
            if topic is None:
                transaction.set_rollback(True)
                return (f"dead letter #{letter.id} was read from {letter.original_topic}, which is not one of this "
                        f"deployment's topics (KAFKA_TOPIC_PREFIX={settings.KAFKA_TOPIC_PREFIX!r}); nothing replayed")
            outbox_enqueue(topic=topic.logical, key=letter.recipient_external_id or "replay", payload=bytes(letter.payload))
            return f"dead letter #{letter.id}: record re-published to {topic.logical}"
        delivery = ChannelDelivery.objects.select_for_update().filter(
            notification_id=letter.notification_id, channel=letter.channel
        ).first()
        if delivery is None or delivery.status in (ChannelDeliveryStatus.SENT, ChannelDeliveryStatus.SKIPPED):
            return f"dead letter #{letter.id}: {letter.channel} delivery already settled; nothing sent"
        delivery.status, delivery.attempts, delivery.updated_at = ChannelDeliveryStatus.RETRYING, 0, timezone.now()
        delivery.save(update_fields=["status", "attempts", "updated_at"])
        scheduler.schedule(_send_item(delivery.id, due_at=clock.now(), lane=""))
        return f"dead letter #{letter.id}: {letter.channel} delivery of {letter.notification_id} queued again"


def dead_letters_discard(*, ids: Sequence[int]) -> int:
    return DeadLetter.objects.filter(id__in=ids, status=DeadLetterStatus.DEAD).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now()
    )
