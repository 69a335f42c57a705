from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core import clock, metrics, scheduler, topics
from core.db import Condition, bulk_copy, bulk_insert, fetch_bound, values_for_keys
from core.dead_letters import dead_letter_write
from core.messages import DigestSpec, EscalationSpec, InvalidPayload, NotificationContent, NotificationTask
from core.models import DeadLetter, DeadLetterReason, OutboxEvent, ScheduledItem
from core.outbox import outbox_enqueue_keyed
from inbox import kinds as kind_registry
from inbox.models import (
    STATE_CHANNEL,
    STREAMS_RECHECK_CHANNEL,
    Notification,
    NotificationKind,
    NotificationQuerySet,
    Preference,
    Recipient,
    Template,
    push_secret_new,
)


# The scheduler's kind for a user-to-user notification held until its `send_at`.
RELEASE = "notification.release"
# The second erase of a deleted recipient's inbox (recipient_delete), and when.
ERASE = "recipient.erase"
ERASE_AGAIN_AFTER = timedelta(minutes=1)
SEND_AT_MAX_AHEAD = timedelta(days=366)
# A send_at this far in the past at most is clock skew, delivered at once; further back it is refused (400).
SEND_AT_MAX_PAST = timedelta(days=1)
# delay_seconds: 1 s to 90 days.
DELAY_MAX = timedelta(days=90)


class NotAccepted(Exception):
    """The `only_if` condition of a send did not hold: nothing was queued."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A notification accepted: its id, and whether the scheduler holds it until its `send_at`."""

    notification_id: str
    scheduled: bool = False


def notification_send(*, sender: str, recipient: str, kind: str, message: str, data: dict,
                      send_at: datetime | None = None, expires_at: datetime | None = None,
                      digest: DigestSpec | None = None, escalate: EscalationSpec | None = None,
                      only_if: Condition | None = None) -> Accepted:
    """Accept a user-to-user notification: it is queued in the outbox, keyed by recipient, and its
    id is returned at once; with a `send_at` still ahead, it is held by the scheduler until then
    (`scheduled`; cancellable until released, delivery.services.notification_cancel). The
    worker writes it into the recipient's inbox; with an `expires_at` that has passed by then, the
    worker skips it (`expired`), and its external channels are not sent after it.

    With `only_if` (the caller's credentials still valid, the kind's default template there for a
    notification without a message), nothing is queued unless it holds, and NotAccepted is raised;
    on the outbox path the INSERT itself decides, so an accepted notification stays one statement.
    An empty `message` is rendered by the worker from the kind's template in the recipient's locale."""
    task = NotificationTask(
        notification_id=str(uuid.uuid4()),
        recipient=recipient,
        kind=kind,
        sender=sender,
        message=message,
        data=data,
        created_at=timezone.now().isoformat(),
        digest=digest,
        escalate=escalate,
        expires_at=expires_at.isoformat() if expires_at is not None else "",
    )
    if send_at is not None and send_at > clock.now():
        if only_if is not None and not only_if.holds():
            raise NotAccepted()
        scheduler.schedule(held_item(task, send_at=send_at))
        transaction.on_commit(metrics.NOTIFICATIONS_SCHEDULED.inc)
        return Accepted(task.notification_id, scheduled=True)
    # One INSERT in autocommit mode is its own transaction: no BEGIN/COMMIT round trips. Inside a
    # caller's transaction (Idempotency-Key) it joins that one.
    if not topics.SEND.enqueue(task, only_if=only_if):
        raise NotAccepted()
    return Accepted(task.notification_id)


def release_key(notification_id: str) -> str:
    return f"release:{notification_id}"


def held_item(task: NotificationTask, *, send_at: datetime) -> scheduler.Item:
    """The scheduler's item that holds `task` until `send_at`."""
    return scheduler.Item(kind=RELEASE, key=release_key(task.notification_id), due_at=send_at,
                          lane=task.recipient, payload={"task": task.encode().decode()})


def notifications_release_due(*, limit: int = 1000) -> int:
    """Queue the held notifications that are due: each task goes into the outbox in the transaction
    that takes its item from the scheduler, so a process killed anywhere queues it exactly once.
    Returns how many (`limit` at most: call again while it returns `limit`).

    On PostgreSQL the items in the form `held_item` writes go from the scheduler to the outbox in one
    statement, with no Python per item (the worker that consumes them checks each record, as it does
    any producer's); the others are read here and queued, or dead-lettered if they cannot be."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            queued, items = _release_in_statement(limit=limit)
        else:
            queued, items = 0, scheduler.take(kind=RELEASE, limit=limit)
        records, unreadable = [], []
        for item in items:
            raw = str(item.payload.get("task", "")).encode()
            try:
                task = NotificationTask.decode(raw)
            except InvalidPayload as exc:  # never written so by us: set aside, never holding up the rest
                unreadable.append(DeadLetter(
                    reason=DeadLetterReason.INVALID_PAYLOAD, error=f"held notification {item.key}: {exc}",
                    original_topic=f"scheduler:{RELEASE}", payload=orjson.dumps(item.payload), created_at=timezone.now()))
                continue
            records.append((topics.SEND.key(task), raw))  # the task as it was encoded: not encoded again
        outbox_enqueue_keyed(topic=topics.SEND.logical, records=records)
        for letter in unreadable:
            dead_letter_write(letter=letter)
    if released := queued + len(records):
        metrics.NOTIFICATIONS_RELEASED.inc(released)
    return queued + len(items)


def _release_in_statement(*, limit: int) -> tuple[int, list[scheduler.Due]]:
    """Take up to `limit` due held notifications and queue those in our own form in one statement:
    (how many it queued, the items taken that it did not)."""
    items, outbox = (connection.ops.quote_name(m._meta.db_table) for m in (ScheduledItem, OutboxEvent))
    ours = """jsonb_typeof(t.payload->'task') = 'string' AND t.lane <> ''
              AND starts_with(t.payload->>'task', '{"v":1,"id":')"""
    now = clock.now()
    [(queued, others)] = fetch_bound(f"""
        WITH taken AS (
            DELETE FROM {items} WHERE id IN (
                SELECT id FROM {items} WHERE kind = %s AND due_at <= %s
                ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
            RETURNING id, key, due_at, lane, payload, releases
        ), queued AS (
            INSERT INTO {outbox} (topic, key, payload, headers, created_at)
            SELECT %s, t.lane, convert_to(t.payload->>'task', 'UTF8'), '{{}}'::jsonb, %s
            FROM taken t WHERE {ours}
            ORDER BY t.due_at, t.id
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM queued),
               coalesce(jsonb_agg(jsonb_build_array(t.id, t.key, t.due_at, t.lane, t.payload, t.releases)
                                  ORDER BY t.due_at, t.id) FILTER (WHERE NOT ({ours})), '[]'::jsonb)
        FROM taken t""", [RELEASE, now, limit, topics.SEND.logical, now])
    others = others if isinstance(others, list) else orjson.loads(others)
    return queued, [scheduler.Due(id=pk, kind=RELEASE, key=key, due_at=datetime.fromisoformat(due_at), lane=lane,
                                  payload=payload if isinstance(payload, dict) else {}, release=releases)
                    for pk, key, due_at, lane, payload, releases in others]


def preferences_of(*, recipient_pks: list[int]) -> dict[int, tuple[dict, dict]]:
    """Opt-outs (kinds, channels) of the recipients that have any."""
    rows = values_for_keys(model=Preference, key="recipient", keys=recipient_pks, columns=("recipient", "kinds", "channels"))
    return {pk: (kinds, channels) for pk, kinds, channels in rows}


def quiet_hours_of(*, recipient_pks: list[int]) -> dict[int, tuple[dict, str]]:
    """The quiet hours (stored form) and time zone name (blank: the default) of those of these
    recipients that have quiet hours: one query, asked only for recipients with an external channel."""
    if not recipient_pks:
        return {}
    rows = Preference.objects.filter(recipient_id__in=recipient_pks, quiet_hours__isnull=False).values_list(
        "recipient_id", "quiet_hours", "recipient__timezone")
    return {pk: (hours, tz) for pk, hours, tz in rows}


class InboxRow(NamedTuple):
    """One notification for one recipient's inbox (a named tuple: the worker makes one per task)."""

    notification_id: str
    recipient_pk: int
    content: NotificationContent


def notifications_insert(*, rows: Sequence[InboxRow], delivered_at: datetime) -> None:
    """Write inbox rows. The caller has claimed their ids in the ledger, so none can exist already.

    Rows that share one content (a campaign's, the same object) go in one statement that binds the
    content once; the others (a campaign's rendered in each recipient's locale too) by COPY."""
    by_content: dict[int, list[InboxRow]] = {}
    for row in rows:
        by_content.setdefault(id(row.content), []).append(row)
    shared: list[list[InboxRow]] = []
    alone: list[InboxRow] = []
    for group in by_content.values():
        if len(group) > 1 and group[0].content.campaign_id is not None:
            shared.append(group)
        else:
            alone += group
    for group in shared:
        c = group[0].content
        bulk_insert(
            model=Notification, columns=("notification_id", "recipient"),
            rows=[(row.notification_id, row.recipient_pk) for row in group],
            same={"kind": c.kind, "sender": c.sender, "title": c.title, "message": c.message, "data": c.data,
                  "campaign_id": c.campaign_id, "created_at": c.created_at, "delivered_at": delivered_at},
        )
    bulk_copy(
        model=Notification,
        columns=("notification_id", "recipient", "kind", "sender", "title", "message", "data", "campaign_id",
                 "created_at", "delivered_at"),
        rows=[
            (row.notification_id, row.recipient_pk, c.kind, c.sender, c.title, c.message, c.data, c.campaign_id,
             c.created_at, delivered_at)
            for row in alone
            for c in (row.content,)
        ],
    )


def notifications_existing(*, notification_ids: Sequence[str]) -> set[str]:
    """Which of these notification ids have an inbox row."""
    rows = values_for_keys(model=Notification, key="notification_id", keys=notification_ids, columns=("notification_id",))
    return {row[0] for row in rows}


@dataclass(frozen=True, slots=True)
class RecipientAddress:
    """What the worker needs of a recipient: its key, and where its external channels reach it."""

    pk: int
    email: str
    push_endpoint: str
    push_secrets: tuple[str, ...] = field(default=(), repr=False)  # the current secret, then one in its grace period


_ADDRESS_COLUMNS = ("external_id", "id", "email", "push_endpoint", "push_secret", "push_secret_previous",
                    "push_secret_previous_until")


def _address(row: tuple, now: datetime) -> RecipientAddress:
    _, pk, email, push_endpoint, secret, previous, previous_until = row
    secrets = (secret, previous) if previous and previous_until and previous_until > now else (secret,)
    return RecipientAddress(pk, email, push_endpoint, tuple(s for s in secrets if s))


def recipients_resolve(*, external_ids: set[str], create: set[str]) -> dict[str, RecipientAddress]:
    """Map product user ids to recipients, first creating the ones in `create` that are unknown.
    Ids not found and not to be created are absent from the answer."""
    columns = _ADDRESS_COLUMNS
    now = timezone.now()
    found = {
        row[0]: _address(row, now)
        for row in values_for_keys(model=Recipient, key="external_id", keys=list(external_ids), columns=columns)
    }
    missing_to_create = create - found.keys()
    if missing_to_create:
        # Another worker may create the same recipient at the same moment: conflicts are skipped,
        # and sorted ids keep concurrent inserts from deadlocking.
        bulk_insert(
            model=Recipient,
            columns=("external_id", "email", "push_endpoint", "locale", "attributes", "created_at", "updated_at"),
            rows=[(e, "", "", "", {}, now, now) for e in sorted(missing_to_create)],
            ignore_conflicts_on="external_id",
        )
        found.update(
            (row[0], _address(row, now))
            for row in values_for_keys(model=Recipient, key="external_id", keys=list(missing_to_create), columns=columns)
        )
    return found


RECIPIENT_FIELDS = ("email", "push_endpoint", "locale", "timezone", "attributes")


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    push_secrets: dict[str, str] = field(default_factory=dict)  # user id -> the secret of its new endpoint


def recipients_upsert(*, recipients: list[dict]) -> UpsertResult:
    """Create or update recipients by user id. Only the fields a recipient's entry carries are
    written (an entry with just an id and attributes keeps its email). A recipient whose push
    endpoint changes gets a new signing secret, returned once in `push_secrets`; the same endpoint
    again keeps its secret."""
    by_id = {r["id"]: r for r in recipients}  # the last entry for an id wins
    now = timezone.now()
    result = UpsertResult()
    with transaction.atomic():
        # Locked: a concurrent rotation or upsert of these recipients waits for this one.
        current = dict(
            Recipient.objects.select_for_update().filter(external_id__in=sorted(by_id)).order_by("external_id")
            .values_list("external_id", "push_endpoint")
        )
        groups: dict[tuple[str, ...], list[Recipient]] = {}
        for external_id, entry in by_id.items():
            fields = tuple(f for f in RECIPIENT_FIELDS if f in entry)
            values = {f: entry[f] for f in fields}
            endpoint = entry.get("push_endpoint")
            if endpoint and endpoint != current.get(external_id):
                values.update(push_secret=push_secret_new(), push_secret_previous="", push_secret_previous_until=None)
                fields += ("push_secret", "push_secret_previous", "push_secret_previous_until")
                result.push_secrets[external_id] = values["push_secret"]
            groups.setdefault(fields, []).append(Recipient(external_id=external_id, created_at=now, updated_at=now, **values))
        for fields, rows in groups.items():
            Recipient.objects.bulk_create(
                rows,
                batch_size=1000,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=[*fields, "updated_at"],
            )
    result.updated = len(current)
    result.created = len(by_id) - len(current)
    return result


def recipient_update(*, recipient: Recipient, **fields) -> tuple[Recipient, str | None]:
    """Change some fields of a recipient; returns it and, if its push endpoint changed, the new secret."""
    secret = None
    endpoint = fields.get("push_endpoint")
    if endpoint and endpoint != recipient.push_endpoint:
        secret = push_secret_new()
        fields.update(push_secret=secret, push_secret_previous="", push_secret_previous_until=None)
    for name, value in fields.items():
        setattr(recipient, name, value)
    recipient.save(update_fields=[*fields, "updated_at"])
    return recipient, secret


class NoPushEndpoint(Exception):
    pass


@dataclass(frozen=True)
class RotatedSecret:
    push_secret: str
    previous_valid_until: datetime | None


def push_secret_rotate(*, recipient_external_id: str) -> RotatedSecret:
    """A new signing secret for a recipient's push endpoint. The old one keeps signing beside it (both
    signatures go in `webhook-signature`) for WEBHOOK_SECRET_GRACE_SECONDS, so the receiver can switch
    at its own pace. Rotating again within that period drops the oldest. Raises Recipient.DoesNotExist
    or NoPushEndpoint."""
    with transaction.atomic():
        recipient = Recipient.objects.select_for_update().get(external_id=recipient_external_id)
        if not recipient.push_endpoint:
            raise NoPushEndpoint(recipient_external_id)
        grace = timedelta(seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
        until = timezone.now() + grace if recipient.push_secret and grace else None
        recipient.push_secret_previous = recipient.push_secret if until else ""
        recipient.push_secret_previous_until = until
        recipient.push_secret = push_secret_new()
        recipient.save(update_fields=["push_secret", "push_secret_previous", "push_secret_previous_until", "updated_at"])
    return RotatedSecret(push_secret=recipient.push_secret, previous_valid_until=until)


def recipient_delete(*, recipient: Recipient) -> None:
    """Erase a recipient with its inbox and its held notifications (`send_at`: they would create it
    again when due; its queued campaign tasks are skipped). Its tokens stop working, and its open
    streams close.

    The inbox has no foreign key constraint (inbox.models.Notification): a worker that read the
    recipient just before this commits can still write a row for it. So the erase is done once more
    ERASE_AGAIN_AFTER later, by the worker's scheduler (`recipients_erase_due`)."""
    recipient_pk = recipient.pk
    with transaction.atomic():
        scheduler.cancel(kind=RELEASE, lane=recipient.external_id)
        recipient.delete()
        scheduler.schedule(scheduler.Item(kind=ERASE, key=f"erase:{recipient_pk}", due_at=clock.now() + ERASE_AGAIN_AFTER,
                                          payload={"recipient": recipient_pk}))
        _streams_recheck(recipient_pk=recipient_pk)


def recipients_erase_due(*, limit: int = 100) -> int:
    """The second erase of deleted recipients' inboxes (see recipient_delete). Returns how many items."""
    with transaction.atomic():
        items = scheduler.take(kind=ERASE, limit=limit)
        pks = [item.payload.get("recipient") for item in items]
        Notification.objects.filter(recipient_id__in=[pk for pk in pks if isinstance(pk, int)]).delete()
    return len(items)


def recipient_tokens_revoke(*, recipient_external_id: str) -> None:
    """End every recipient token issued so far for this recipient, and close the streams opened
    with one. Raises Recipient.DoesNotExist."""
    with transaction.atomic():
        recipient_pk = Recipient.objects.values_list("pk", flat=True).get(external_id=recipient_external_id)
        Recipient.objects.filter(pk=recipient_pk).update(token_generation=F("token_generation") + 1)
        _streams_recheck(recipient_pk=recipient_pk)



def _streams_recheck(*, recipient_pk: int) -> None:
    _notify(STREAMS_RECHECK_CHANNEL, str(recipient_pk))


def _state_changed(*, recipient_pk: int, change: dict) -> None:
    _notify(STATE_CHANNEL, orjson.dumps({"recipient_pk": recipient_pk, **change}).decode())


def _notify(channel: str, payload: str) -> None:
    """PostgreSQL NOTIFY, sent when the surrounding transaction commits (at once in autocommit)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])


READ_STATE_ACTIONS = {
    "read": NotificationQuerySet.mark_read,
    "unread": NotificationQuerySet.mark_unread,
    "seen": NotificationQuerySet.mark_seen,
    "archive": NotificationQuerySet.archive,
    "unarchive": NotificationQuerySet.unarchive,
}


def notification_mark(*, recipient_external_id: str, notification_id: str, action: str) -> Notification:
    """Apply a read-state action to one notification of one recipient; raises Notification.DoesNotExist.
    A change is pushed to the recipient's open streams."""
    notifications = Notification.objects.filter(recipient__external_id=recipient_external_id, notification_id=notification_id)
    changed = READ_STATE_ACTIONS[action](notifications)
    notification = notifications.get()
    if changed:
        _state_changed(recipient_pk=notification.recipient_id, change={"action": action, "ids": [notification_id]})
    return notification


def notifications_mark_all_read(*, recipient_external_id: str, up_to: str | None = None) -> int:
    """Mark every unread notification read, or only those up to (and including) the notification `up_to`."""
    recipient_pk = Recipient.objects.filter(external_id=recipient_external_id).values_list("id", flat=True).first()
    notifications = Notification.objects.filter(recipient_id=recipient_pk)
    if up_to is not None:
        newest = notifications.filter(notification_id=up_to).values_list("id", flat=True).first()
        if newest is None:
            raise Notification.DoesNotExist(up_to)
        notifications = notifications.filter(id__lte=newest)
    marked = notifications.mark_read() if recipient_pk is not None else 0
    if marked:
        _state_changed(recipient_pk=recipient_pk, change={"action": "read-all", "up_to": up_to})
    return marked


def preference_set(
    *, recipient_external_id: str, kinds: dict[str, bool], channels: dict[str, bool], quiet_hours: dict | None = None,
    create_recipient: bool = True,
) -> Preference:
    """Replace a recipient's opt-outs and quiet hours (None: none), creating the recipient if the product has not registered it
    yet and `create_recipient` (services; never a recipient's own token). Raises Recipient.DoesNotExist."""
    with transaction.atomic():
        if create_recipient:
            recipient, _ = Recipient.objects.get_or_create(external_id=recipient_external_id)
        else:
            recipient = Recipient.objects.get(external_id=recipient_external_id)
        preference, _ = Preference.objects.update_or_create(recipient=recipient, defaults={"kinds": kinds, "channels": channels, "quiet_hours": quiet_hours})
    return preference


# --- Kinds and templates ---------------------------------------------------------------------------


def kind_register(*, name: str, urgent: bool = False, digest_window_seconds: int | None = None,
                  templates: Sequence[dict] = ()) -> NotificationKind:
    """Register a kind, with its templates (each a dict of channel, locale and parts), in one transaction.
    The caller has checked the name is free and the templates parse (inbox.serializers)."""
    with transaction.atomic():
        kind = NotificationKind.objects.create(name=name, urgent=urgent, digest_window_seconds=digest_window_seconds)
        for template in templates:
            template_create(kind=name, **template)
    kind_registry.kind_remember(name)
    return kind


def template_create(*, kind: str, channel: str, locale: str = "", **parts: str) -> Template:
    return Template.objects.create(kind=kind, channel=channel, locale=locale, **parts)


def template_update(*, template: Template, **fields: str) -> Template:
    """Change some of a template's fields; its updated_at changes, so every process compiles it again."""
    for name, value in fields.items():
        setattr(template, name, value)
    template.save()
    return template


def template_delete(*, template: Template) -> None:
    template.delete()
