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

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns import services as campaign_services
from campaigns.models import CampaignStatus
from core import clock, metrics, scheduler, topics
from core.db import bulk_insert, fetch_bound
from core.dead_letters import dead_letter_of, dead_letter_write, dead_letters_store
from core.failures import backoff_delay, safe_text
from core.messages import (
    CampaignChunk,
    Channel,
    ChannelRetry,
    DigestSpec,
    Envelope,
    NotificationContent,
    NotificationTask,
    Origin,
)
from core.models import DeadLetter, DeadLetterReason, DeadLetterStatus, OutboxEvent, ScheduledItem
from core.outbox import outbox_enqueue, outbox_enqueue_many
from delivery import caps, digests, holds, rendering
from delivery.channels import ChannelError, Outgoing
from delivery.models import (
    ChannelDelivery,
    ChannelDeliveryStatus,
    Delivery,
    DeliveryOutcome,
)
from delivery.routing import CAMPAIGN_CANCELLED, NO_OPT_OUTS, Route, route
from inbox import models as inbox_models
from inbox import selectors as inbox_selectors
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
    digested: int = 0
    duplicates: int = 0
    sends_scheduled: int = 0
    by_outcome_and_kind: Counter = field(default_factory=Counter)
    held: Counter = field(default_factory=Counter)  # sends due later, by (channel, reason): delivery/holds.py


def deliveries_settle(
    *,
    tasks: Sequence[NotificationTask] = (),
    chunks: Sequence[tuple[CampaignChunk, Origin]] = (),
    origins: Mapping[str, Origin] | None = None,
) -> BatchResult:
    """Deliver each task, and each recipient of each campaign chunk, at most once, whatever happened before.

    In one transaction: resolve recipients (user-to-user tasks create theirs; campaign tasks whose
    recipient is gone are skipped), route each task (delivery/routing.py), claim each notification
    id in the ledger, write the inbox rows of the claimed ones with a `pending` ledger row per
    external channel, and add the batch's counts to their campaigns. A task whose id is already in
    the ledger changes nothing, except that its channel sends still pending (a worker died before
    them) are handed back. The caller commits its Kafka offsets only after this returns and the
    returned sends are recorded.

    A chunk's recipients whom the campaign reaches in-app only are settled as a set, in one statement
    (`_chunk_deliver_in_app`): their inbox row is their ledger entry. The others (not in the directory,
    with an address, or with preferences) are routed one by one as tasks.
    """
    origins = dict(origins or {})
    result = BatchResult()
    now = timezone.now()
    with transaction.atomic():
        campaigns = campaign_selectors.campaigns_by_id(
            ids={t.campaign_id for t in tasks if t.campaign_id} | {chunk.campaign_id for chunk, _ in chunks})
        progress: defaultdict[int, Counter] = defaultdict(Counter)
        tasks = list(tasks)
        # Notifications to a topic whose kind digests: each subscriber's is folded (as tasks, never the set).
        topic_digests = digests.topic_digests(campaigns=campaigns)
        for chunk, origin in chunks:
            rest = list(chunk.recipients)
            campaign = campaigns.get(chunk.campaign_id)
            cap_rules = caps.in_app_rules(kind=campaign.kind) if campaign is not None else ()
            # (With in-app caps, a campaign with templates of its own settles its recipients as tasks,
            # which count them: delivery/caps.py. Without templates, the set statement counts them.)
            if (campaign is not None and _reaches_plain_recipients_in_app_only(campaign)
                    and not (campaign.templates and cap_rules) and campaign.pk not in topic_digests):
                capped = 0
                if campaign.templates:  # its own templates: each recipient's text, in its locale
                    delivered, plain, rest = _chunk_deliver_in_app_rendered(chunk=chunk, campaign=campaign,
                                                                            delivered_at=now)
                else:
                    delivered, capped, plain, rest = _chunk_deliver_in_app(
                        chunk=chunk, content=NotificationContent.of_campaign(campaign), delivered_at=now,
                        cap_rules=cap_rules)
                result.delivered += delivered
                result.skipped += capped
                result.duplicates += plain - delivered - capped
                result.by_outcome_and_kind[(DeliveryOutcome.DELIVERED.value, campaign.kind)] += delivered
                progress[campaign.pk][DeliveryOutcome.DELIVERED] += delivered
                if capped:
                    result.by_outcome_and_kind[(DeliveryOutcome.SKIPPED.value, campaign.kind)] += capped
                    progress[campaign.pk][DeliveryOutcome.SKIPPED] += capped
            for recipient in rest:
                task = NotificationTask(notification_id=chunk.notification_id(recipient), recipient=recipient,
                                        campaign_id=chunk.campaign_id)
                tasks.append(task)
                origins.setdefault(task.notification_id, origin)
        _tasks_settle(tasks=tasks, campaigns=campaigns, origins=origins, now=now, result=result, progress=progress,
                      topic_digests=topic_digests)
        for campaign_id, counts in progress.items():
            campaign_services.campaign_progress_add(
                campaign_id=campaign_id,
                # A topic's notification folded into a subscriber's digest counts as delivered (by the digest).
                delivered=counts[DeliveryOutcome.DELIVERED] + counts[DeliveryOutcome.DIGESTED],
                skipped=counts[DeliveryOutcome.SKIPPED],
                failed=counts[DeliveryOutcome.FAILED],
            )
    return result


# Who a chunk's set-based statement settles: a recipient with no address and no preferences.
_PLAIN_RECIPIENT = inbox_services.RecipientAddress(pk=0, email="", push_endpoint="")


def _reaches_plain_recipients_in_app_only(campaign) -> bool:
    """Whether the campaign's route for a recipient without address or preferences is in-app only
    (the routing table decides, once per chunk: no push gateway, the campaign still running)."""
    decision = route(campaign_task=True, campaign_status=campaign.status, recipient=_PLAIN_RECIPIENT,
                     kind=campaign.kind, gateway=settings.PUSH_GATEWAY_URL)
    return decision.delivered and decision.in_app and not decision.external and connection.vendor == "postgresql"


def _chunk_deliver_in_app(*, chunk: CampaignChunk, content: NotificationContent, delivered_at: datetime,
                          cap_rules: Sequence[caps.CapRule] = ()) -> tuple[int, int, int, list[str]]:
    """One statement for a chunk: an inbox row for each recipient in the directory that has no
    address and no preferences (whose route `_reaches_plain_recipients_in_app_only` has decided),
    unless its notification id is in the ledger or the inbox already. The inbox row's unique
    notification id is its ledger entry (one row per delivery instead of two).

    With in-app frequency caps matching the campaign's kind (`cap_rules`), the chunk's guard rows are
    locked first (delivery/caps.py) and the same statement leaves out the recipients over a cap (a
    ledger row `skipped`, `capped`) and counts the others' deliveries (a CapEvent each).

    Returns (rows inserted, recipients capped, such recipients, the chunk's other recipients in order)."""
    recipient, preference, inbox, ledger = (
        connection.ops.quote_name(m._meta.db_table)
        for m in (inbox_models.Recipient, inbox_models.Preference, inbox_models.Notification, Delivery))
    prefix = f"{chunk.campaign_id}:"
    caps_sql, cap_now = ("", "", "", "0"), None
    if cap_rules:
        cap_now = clock.now()
        caps.guards_lock(recipients=chunk.recipients, channel=caps.IN_APP, now=cap_now)
        caps_sql = caps.chunk_sql(ledger=ledger, inbox=inbox)
    # Each lookup is by index, one per recipient, whatever the table sizes: the planner, which knows the
    # array's length, would otherwise hash whole tables. `OFFSET 0` keeps a subquery from being
    # flattened into a join (LATERAL) or an anti-join (NOT EXISTS).
    sql = f"""
        WITH r AS (
            SELECT u.ord, u.ext, rec.pk, rec.special
            FROM unnest(%b::text[]) WITH ORDINALITY AS u(ext, ord)
            LEFT JOIN LATERAL (
                SELECT x.id AS pk,
                       (x.email <> '' OR x.push_endpoint <> ''
                        OR EXISTS (SELECT 1 FROM {preference} p WHERE p.recipient_id = x.id OFFSET 0)) AS special
                FROM {recipient} x WHERE x.external_id = u.ext OFFSET 0
            ) rec ON true
        ){caps_sql[0]}, ins AS (
            INSERT INTO {inbox} (notification_id, recipient_id, kind, sender, title, message, data,
                                 campaign_id, created_at, delivered_at)
            SELECT %s || r.ext, r.pk, %s, %s, %s, %s, %s::jsonb, %s, %s, %s FROM r
            WHERE r.pk IS NOT NULL AND NOT r.special{caps_sql[1]}
              AND NOT EXISTS (SELECT 1 FROM {ledger} d WHERE d.notification_id = %s || r.ext OFFSET 0)
            ON CONFLICT (notification_id) DO NOTHING
            RETURNING {"notification_id" if cap_rules else "1"}
        ){caps_sql[2]}
        SELECT (SELECT count(*) FROM ins), {caps_sql[3]},
               count(*) FILTER (WHERE r.pk IS NOT NULL AND NOT r.special),
               coalesce(array_agg(r.ext ORDER BY r.ord) FILTER (WHERE r.pk IS NULL OR r.special), '{{}}')
        FROM r
    """
    c = content
    params = [list(chunk.recipients)]
    if cap_rules:
        params += [[r.max for r in cap_rules], [r.kind for r in cap_rules], [r.per_seconds for r in cap_rules], cap_now]
    params += [prefix, c.kind, c.sender, c.title, c.message, orjson.dumps(c.data).decode(), c.campaign_id, c.created_at,
               delivered_at, prefix]
    if cap_rules:
        params += [len(prefix) + 1, c.kind, cap_now, prefix, chunk.campaign_id, delivered_at, prefix]
    [(inserted, capped, plain, rest)] = fetch_bound(sql, params)
    if capped:
        caps.CAPPED.labels(channel=caps.IN_APP).inc(capped)
    return inserted, capped, plain, rest


def _chunk_deliver_in_app_rendered(*, chunk: CampaignChunk, campaign, delivered_at: datetime) -> tuple[int, int, list[str]]:
    """`_chunk_deliver_in_app` for a campaign with templates of its own, in two statements: one reads
    the chunk's recipients that have no address and no preferences, with their locale and attributes;
    each one's text is rendered in its locale (delivery/rendering.py: TemplateRenderError for the first
    that fails, and the consumer splits the chunk down to that recipient); one writes their rows,
    unless their notification id is in the ledger or the inbox already."""
    recipient, preference, inbox, ledger = (
        connection.ops.quote_name(m._meta.db_table)
        for m in (inbox_models.Recipient, inbox_models.Preference, inbox_models.Notification, Delivery))
    found = fetch_bound(f"""
        SELECT u.ext, rec.pk, rec.locale, rec.attributes, rec.special
        FROM unnest(%b::text[]) WITH ORDINALITY AS u(ext, ord)
        LEFT JOIN LATERAL (
            SELECT x.id AS pk, x.locale, x.attributes,
                   (x.email <> '' OR x.push_endpoint <> ''
                    OR EXISTS (SELECT 1 FROM {preference} p WHERE p.recipient_id = x.id OFFSET 0)) AS special
            FROM {recipient} x WHERE x.external_id = u.ext OFFSET 0
        ) rec ON true
        ORDER BY u.ord""", [list(chunk.recipients)])
    plain = [(ext, pk, locale, attributes) for ext, pk, locale, attributes, special in found
             if pk is not None and not special]
    rest = [ext for ext, pk, _, _, special in found if pk is None or special]
    if not plain:
        return 0, 0, rest
    texts = [rendering.campaign_in_app(campaign, recipient_id=ext, locale=locale,
                                       attributes=attributes if isinstance(attributes, dict) else orjson.loads(attributes))
             for ext, _, locale, attributes in plain]
    prefix = f"{chunk.campaign_id}:"
    c = NotificationContent.of_campaign(campaign)
    [(inserted,)] = fetch_bound(f"""
        WITH ins AS (
            INSERT INTO {inbox} (notification_id, recipient_id, kind, sender, title, message, data,
                                 campaign_id, created_at, delivered_at)
            SELECT %s || u.ext, u.pk, %s, %s, u.title, u.message, %s::jsonb, %s, %s, %s
            FROM unnest(%b::text[], %s::bigint[], %b::text[], %b::text[]) AS u(ext, pk, title, message)
            WHERE NOT EXISTS (SELECT 1 FROM {ledger} d WHERE d.notification_id = %s || u.ext OFFSET 0)
            ON CONFLICT (notification_id) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM ins""", [
        prefix, c.kind, c.sender, orjson.dumps(c.data).decode(), c.campaign_id, c.created_at, delivered_at,
        [p[0] for p in plain], [p[1] for p in plain], [t[0] for t in texts], [t[1] for t in texts], prefix,
    ])
    return inserted, len(plain), rest


def _tasks_settle(*, tasks: list[NotificationTask], campaigns: Mapping[int, object], origins: Mapping[str, Origin],
                  now: datetime, result: BatchResult, progress: defaultdict[int, Counter],
                  topic_digests: Mapping[int, DigestSpec]) -> None:
    """Route and settle tasks one by one (within deliveries_settle's transaction)."""
    first_of_id: dict[str, NotificationTask] = {}
    for task in tasks:
        first_of_id.setdefault(task.notification_id, task)  # the first wins, in a batch as across batches
    unique_tasks = list(first_of_id.values())
    result.duplicates += len(tasks) - len(unique_tasks)
    if not unique_tasks:
        return
    # A campaign task settled in a chunk's set has its inbox row and no ledger row: a repeat.
    in_inbox = inbox_services.notifications_existing(
        notification_ids=[t.notification_id for t in unique_tasks if t.campaign_id])
    if in_inbox:
        unique_tasks = [t for t in unique_tasks if t.notification_id not in in_inbox]
        result.duplicates += len(in_inbox)
    recipients = inbox_services.recipients_resolve(
        external_ids={t.recipient for t in unique_tasks},
        # A digest is of events the recipient had when they came: one whose recipient was deleted since
        # is skipped (recipient deleted), never brings it back.
        create={t.recipient for t in unique_tasks if t.campaign_id is None and not digests.is_digest(t.notification_id)},
    )
    preferences = inbox_services.preferences_of(recipient_pks=[r.pk for r in recipients.values()])
    gateway = settings.PUSH_GATEWAY_URL
    clock_now = clock.now()  # expiry: the scheduler's clock, which tests move

    routes: dict[str, Route] = {}
    # Digests (delivery/digests.py): a user-to-user task that would be delivered is folded instead.
    folds: dict[str, DigestSpec] = {}
    if connection.vendor == "postgresql" and (u2u := [t for t in unique_tasks if t.campaign_id is None]):
        kind_defaults, urgent = inbox_selectors.kind_rules(names={t.kind for t in u2u})
        folds = {t.notification_id: spec for t in u2u
                 if (spec := digests.digest_of(t, kind_defaults=kind_defaults, urgent=urgent)) is not None}
    folds |= {t.notification_id: topic_digests[t.campaign_id] for t in unique_tasks if t.campaign_id in topic_digests}
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
            expired=task.expired(clock_now),
        )
        if task.notification_id in folds and routes[task.notification_id].delivered:
            routes[task.notification_id] = Route(DeliveryOutcome.DIGESTED, digests.ledger_reason(folds[task.notification_id]))

    claimed = _ledger_claim(
        entries=[(t, r.outcome, r.reason) for t in unique_tasks for r in (routes[t.notification_id],)],
        settled_at=now,
    )
    result.duplicates += len(unique_tasks) - len(claimed)
    # Frequency caps (delivery/caps.py): a claimed delivery over a cap is not made on that channel.
    caps.caps_apply(tasks=unique_tasks, claimed=claimed, routes=routes, campaigns=campaigns, now=clock.now())
    if folded := [(digests.topic_event(t, campaigns[t.campaign_id]) if t.campaign_id else t, folds[t.notification_id])
                  for t in unique_tasks if t.notification_id in claimed
                  and t.notification_id in folds and routes[t.notification_id].outcome == DeliveryOutcome.DIGESTED]:
        digests.digests_fold(tasks=folded)
    if carried := [t.notification_id for t in unique_tasks if t.notification_id in claimed
                   and digests.is_digest(t.notification_id)
                   and routes[t.notification_id].outcome == DeliveryOutcome.DIGESTED]:
        digests.digests_carry(notification_ids=carried)  # capped on every channel: told in the next one

    # Notifications sent without a message: their content from the kind's templates (delivery/rendering.py).
    rendered = rendering.contents_render(tasks=unique_tasks, claimed=claimed, routes=routes, recipients=recipients,
                                         campaigns=campaigns)
    campaign_contents = {pk: NotificationContent.of_campaign(c) for pk, c in campaigns.items()}
    inbox_rows: list[inbox_services.InboxRow] = []
    channel_rows: list[tuple[Outgoing, str]] = []
    pending: list[holds.Pending] = []  # quiet hours and escalations (delivery/holds.py)
    expiries = {t.notification_id: t.expires_at for t in unique_tasks if t.expires_at}
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
        own = rendered.get(task.notification_id)
        content = (own.in_app if own and own.in_app else campaign_contents[campaign.pk] if campaign
                   else NotificationContent.of_task(task))
        recipient = recipients[task.recipient]
        if decision.in_app:
            inbox_rows.append(inbox_services.InboxRow(task.notification_id, recipient.pk, content))
        if decision.external:
            item = Outgoing(notification_id=task.notification_id, recipient=task.recipient, content=content,
                            email=recipient.email, push_endpoint=recipient.push_endpoint,
                            push_secrets=recipient.push_secrets)
            channel_rows += [(item if own is None else dataclasses.replace(item, content=own.for_channel(channel)),
                              channel) for channel in decision.external]
            pending.append(holds.Pending(task.notification_id, campaign.kind if campaign else task.kind, recipient.pk,
                                         decision.external, campaign.escalation if campaign else task.escalate))
    inbox_services.notifications_insert(rows=inbox_rows, delivered_at=now)
    held = holds.holds_of(pending=pending, now=clock.now()) if pending else {}
    result.held.update((channel, hold.reason) for (_, channel), hold in held.items())
    result.sends_scheduled += _channel_deliveries_create(channel_rows=channel_rows, origins=origins, now=now, held=held,
                                                         expiries=expiries)


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


def _channel_deliveries_create(*, channel_rows: list[tuple[Outgoing, str]], origins: Mapping[str, Origin], now,
                               held: Mapping[tuple[str, str], holds.Hold] | None = None,
                               expiries: Mapping[str, str] | None = None) -> int:
    """A `pending` channel delivery per send, each with its scheduled item (due now, or when `held` says:
    quiet hours, escalations), carrying the notification's `expires_at` if it has one; returns how many."""
    expiries = expiries or {}
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
    held = held or {}
    return scheduler.schedule(*(
        _send_item(ids[(item.notification_id, channel)], due_at=hold.due_at if hold else due,
                   lane=send_lane(channel, item), extra=hold.payload() if hold else None,
                   expires_at=expiries.get(item.notification_id, ""))
        for item, channel in channel_rows
        for hold in (held.get((item.notification_id, channel)),)
    ))


def send_key(channel_delivery_id: int) -> str:
    """The scheduled item of a channel delivery's next attempt."""
    return f"send:{channel_delivery_id}"


def _send_item(channel_delivery_id: int, *, due_at: datetime, lane: str, extra: dict | None = None,
               expires_at: str = "") -> scheduler.Item:
    """`extra`: why a held send waits ("held") and what cancels an escalation ("unless"): delivery/holds.py.
    `expires_at`: the notification's, kept by its retries (scheduler.reschedule keeps the payload)."""
    payload = {"channel_delivery": channel_delivery_id, **(extra or {})}
    if expires_at:
        payload["expires_at"] = expires_at
    return scheduler.Item(kind=SEND, key=send_key(channel_delivery_id), due_at=due_at, lane=lane, payload=payload)


# A channel delivery not attempted because its notification's `expires_at` had passed: skipped, with this.
EXPIRED = "expired"


def _send_expired(item: scheduler.Due, now: datetime) -> bool:
    value = item.payload.get("expires_at")
    try:
        return isinstance(value, str) and datetime.fromisoformat(value) <= now
    except (TypeError, ValueError):  # never written so by us: sent as if it had none
        return False


def send_lane(channel: str, outgoing: Outgoing) -> str:
    """Sends to one endpoint host (and port) share a lane, a concurrency limit; email shares one."""
    if channel == Channel.EMAIL:
        return Channel.EMAIL.value
    return urlsplit(outgoing.push_endpoint or settings.PUSH_GATEWAY_URL).netloc.rpartition("@")[2].lower()[:255]


def channel_sends_of(*, items: Sequence[scheduler.Due]) -> list[ChannelSend]:
    """The sends the released items stand for. An item whose channel delivery is settled already (or
    gone, or whose recipient was deleted) is done at once and has no send; so is one whose
    notification has expired (by the scheduler's clock): its delivery is skipped, `expired`."""
    by_id = {item.payload.get("channel_delivery"): item for item in items}
    rows = [row for row in ChannelDelivery.objects.filter(id__in=[k for k in by_id if isinstance(k, int)])
            if row.status in (ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING)]
    now = clock.now()
    if expired := {row.id for row in rows if _send_expired(by_id[row.id], now)}:
        ChannelDelivery.objects.filter(
            id__in=expired, status__in=(ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING),
        ).update(status=ChannelDeliveryStatus.SKIPPED, last_error=EXPIRED, updated_at=timezone.now())
        rows = [row for row in rows if row.id not in expired]
    rows = _cancelled_campaigns_settle(rows)
    rows = _escalations_settle(rows, items=by_id)
    sends = _sends_for(rows, items=by_id)
    wanted = {send.channel_delivery_id for send in sends}
    scheduler.done(item for key, item in by_id.items() if key not in wanted)
    return sends


def _cancelled_campaigns_settle(rows: list[ChannelDelivery]) -> list[ChannelDelivery]:
    """Sends of a campaign cancelled since they were scheduled (held by quiet hours or an escalation, or
    retrying) are skipped, "campaign cancelled": a cancelled campaign makes no further deliveries
    (found from outside: an escalation of a cancelled campaign went out). The rest of `rows`, to send."""
    ids = {row.campaign_id for row in rows if row.campaign_id}
    if not ids:
        return rows
    cancelled = {pk for pk, campaign in campaign_selectors.campaigns_by_id(ids=ids).items()
                 if campaign.status == CampaignStatus.CANCELLED}
    if not cancelled:
        return rows
    ChannelDelivery.objects.filter(
        id__in=[row.id for row in rows if row.campaign_id in cancelled],
        status__in=(ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING),
    ).update(status=ChannelDeliveryStatus.SKIPPED, last_error=CAMPAIGN_CANCELLED.reason, updated_at=timezone.now())
    return [row for row in rows if row.campaign_id not in cancelled]


def _escalations_settle(rows: list[ChannelDelivery], *, items: Mapping[int, scheduler.Due]) -> list[ChannelDelivery]:
    """Escalated sends whose notification was read (or seen) first are skipped ("read before
    escalation"): the rest of `rows`, to send."""
    checks = [(row.notification_id, unless) for row in rows
              if (unless := items[row.id].payload.get("unless")) in ("read", "seen")]
    if not checks:
        return rows
    cancelled = holds.escalations_cancelled(checks=checks)
    skipped = [row for row in rows if row.notification_id in cancelled and items[row.id].payload.get("unless")]
    by_reason_and_channel: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for row in skipped:
        by_reason_and_channel[(cancelled[row.notification_id], row.channel)].append(row.id)
    for (reason, channel), ids in by_reason_and_channel.items():  # (items done by the caller: no send)
        changed = ChannelDelivery.objects.filter(
            id__in=ids, status__in=(ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING),
        ).update(status=ChannelDeliveryStatus.SKIPPED, last_error=reason, updated_at=timezone.now())
        metrics.ESCALATIONS.labels(channel, "cancelled").inc(changed)
    escalated = [row for row in rows if row.notification_id not in cancelled and items[row.id].payload.get("unless")]
    for row in escalated:
        if row.attempts == 0:  # (a retry of an escalated send is not escalated again)
            metrics.ESCALATIONS.labels(row.channel, "escalated").inc()
    return [row for row in rows if row not in skipped]


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


# The ledger's reason for a held notification cancelled by its sender (DELETE /api/v1/notifications/<id>/).
CANCELLED = "cancelled"


def notification_cancel(*, notification_id: str) -> bool:
    """Cancel a notification held until its `send_at` (or delay): its scheduled item is deleted and
    the ledger records it as skipped, `cancelled`, in one transaction. True if it is cancelled (now,
    or by an earlier call); False if it is not held (released already, or no such notification).

    Race-safe against the release (inbox.services.notifications_release_due), which claims the item
    with FOR UPDATE SKIP LOCKED in the transaction that queues its task: the one DELETE here either
    takes the item first (the release then skips it, and finds it gone) or waits for the release to
    commit and then deletes nothing. Both cannot succeed."""
    table = connection.ops.quote_name(ScheduledItem._meta.db_table)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE kind = %s AND key = %s RETURNING lane",
                           [inbox_services.RELEASE, inbox_services.release_key(notification_id)])
            deleted = cursor.fetchall()
        if not deleted:
            return Delivery.objects.filter(notification_id=notification_id, outcome=DeliveryOutcome.SKIPPED,
                                           reason=CANCELLED).exists()
        [(recipient,)] = deleted
        _ledger_claim(entries=[(NotificationTask(notification_id=notification_id, recipient=recipient),
                                DeliveryOutcome.SKIPPED, CANCELLED)], settled_at=timezone.now())
    return True


@dataclass
class CancelCounts:
    notifications: int = 0  # held notifications cancelled
    sends: int = 0  # waiting sends cancelled (quiet hours, escalations, retries)
    campaigns: int = 0  # held campaigns cancelled (every part of each)
    left: int = 0  # not cancellable here (a digest closes on its own), or released meanwhile


def scheduled_items_cancel(*, ids: Sequence[int]) -> CancelCounts:
    """Cancel waiting work chosen in the admin: held notifications (as DELETE /api/v1/notifications/<id>/
    does), channel sends waiting for quiet hours to end, for an escalation or for a retry (their
    channel delivery is skipped, `cancelled`) and held campaigns (a part of one cancels the campaign,
    as POST /api/v1/campaigns/<id>/cancel/ does). A digest window is left: it closes on its own. An item
    released meanwhile is not cancelled (a send already under way is recorded as what it became)."""
    counts = CancelCounts()
    campaigns_cancelled: set[int] = set()
    for item in ScheduledItem.objects.filter(id__in=ids).order_by("id"):
        if item.kind == inbox_services.RELEASE and item.key.startswith(inbox_services.release_key("")):
            held = notification_cancel(notification_id=item.key.removeprefix(inbox_services.release_key("")))
            counts.notifications += held
            counts.left += not held
        elif item.kind == SEND and _channel_send_cancel(item=item):
            counts.sends += 1
        elif item.kind == campaign_services.RELEASE and (campaign := campaign_selectors.campaign_of_part(
                payload=item.payload)) is not None:
            if campaign.pk not in campaigns_cancelled:
                try:
                    campaign_services.campaign_cancel(campaign=campaign)
                except campaign_services.CampaignConflict:  # it completed meanwhile
                    counts.left += 1
                    continue
                campaigns_cancelled.add(campaign.pk)
                counts.campaigns += 1
        else:
            counts.left += 1
    return counts


def _channel_send_cancel(*, item: ScheduledItem) -> bool:
    """Delete a waiting send's item, unless it was released since (as read), and skip its delivery."""
    with transaction.atomic():
        as_read = ScheduledItem.objects.filter(id=item.id, kind=SEND, releases=item.releases, due_at=item.due_at)
        if not as_read.delete()[0]:
            return False
        delivery_id = item.payload.get("channel_delivery") if isinstance(item.payload, dict) else None
        ChannelDelivery.objects.filter(
            id=delivery_id if type(delivery_id) is int else None,
            status__in=(ChannelDeliveryStatus.PENDING, ChannelDeliveryStatus.RETRYING),
        ).update(status=ChannelDeliveryStatus.SKIPPED, last_error=CANCELLED, updated_at=timezone.now())
    return True
