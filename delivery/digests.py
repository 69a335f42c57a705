"""Digests: "Tito and 3 others liked your post" instead of four notifications.

A user-to-user notification with a digest (its own `digest`, or its kind's default) is not delivered
when the worker settles it: its ledger row says `digested` and it is folded, as an event, into its
recipient's open window for the digest's key (`digests_fold`). The first event opens the window and
schedules its close with the durable scheduler (core/scheduler.py); when the window closes
(`digests_close_due`, in the worker's due loop) one notification is queued in the outbox, in the
same transaction that takes the window's item from the scheduler, and the worker then settles it
like any other: preferences, templates (with `count`, `actors` and `events`), channels, the ledger.

Exactly one digest per window, whatever happens:
- At most one open window per (recipient, kind, key): a partial unique constraint decides, even when
  a rebalance briefly gives a recipient two workers (they fold in (recipient, kind, key) order, so
  they cannot deadlock each other).
- An event is folded under a share lock of its open window, and the close takes the window with
  FOR UPDATE SKIP LOCKED: an event is either in the window the close reads (it waited for the fold's
  commit) or, once the window is closed, opens the next one. A window being folded into is closed
  on the next pass, never waited for.
- The digest's id is `digest:<window id>`: the ledger drops a repeat, and a process killed anywhere
  rolls back its whole transaction (the fold with its batch, the close with its scheduler item).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
from django.db import connection, transaction

from core import clock, scheduler, topics
from core.db import fetch_bound
from core.messages import DigestSpec, NotificationTask
from core.metrics import DIGESTS_CLOSED, DIGESTS_OPENED
from delivery.models import DigestEvent, DigestWindow, digest_notification_id, digest_window_id, is_digest
from inbox import selectors as inbox_selectors

logger = logging.getLogger(__name__)

# The scheduler's kind for closing a digest window.
CLOSE = "digest.close"
# data.digest lists this many events and actors at most (`count` and `actor_count` count them all),
# so a digest of a viral post stays a small record and a small inbox row.
LISTED_EVENTS = 20
LISTED_ACTORS = 50
# The listed events' messages and data together: beyond it an event is listed without them
# ("truncated": true), so that a digest stays a small row whatever its events carried (each up to
# 16 KiB of data and 2,000 characters: found from outside, a digest of 340 KB).
LISTED_BYTES = 32 * 1024

_WINDOW = DigestWindow._meta.db_table
_EVENT = DigestEvent._meta.db_table


def digest_of(task: NotificationTask, *, kind_defaults: Mapping[str, int], urgent: frozenset[str] | set[str]) -> DigestSpec | None:
    """The digest a settled user-to-user task is folded into, if any: its own, else its kind's
    default (keyed by the kind's name). Never for an urgent kind, an escalated notification, nor for a
    digest itself."""
    if task.campaign_id is not None or task.kind in urgent or is_digest(task.notification_id):
        return None
    if task.escalate is not None:  # its escalation is about this notification being read (the API refuses both)
        return None
    if task.digest is not None:
        return task.digest
    window = kind_defaults.get(task.kind)
    return DigestSpec(key=task.kind, window_seconds=window) if window else None


def topic_digests(*, campaigns: Mapping[int, object]) -> dict[int, DigestSpec]:
    """The notifications sent to a topic (campaigns with a sender: campaigns.services.topic_notification_send)
    whose kind digests by default and is not urgent, by campaign id: each subscriber's notification is
    folded into that subscriber's digest of the kind, as a user-to-user notification of the kind is."""
    topical = {pk: c for pk, c in campaigns.items() if getattr(c, "sender", "")}
    if not topical or connection.vendor != "postgresql":
        return {}
    kind_defaults, urgent = inbox_selectors.kind_rules(names={c.kind for c in topical.values()})
    return {pk: DigestSpec(key=c.kind, window_seconds=kind_defaults[c.kind]) for pk, c in topical.items()
            if c.kind in kind_defaults and c.kind not in urgent}


def topic_event(task: NotificationTask, campaign) -> NotificationTask:
    """A topic subscriber's task as the event it folds: the notification's sender, text and data."""
    return replace(task, kind=campaign.kind, sender=campaign.sender, message=campaign.body, data=campaign.data,
                   created_at=campaign.created_at.isoformat())


def ledger_reason(spec: DigestSpec) -> str:
    """The ledger's reason for a folded notification (200 characters at most)."""
    return f"into digest {spec.key}"[:200]


def digests_fold(*, tasks: Sequence[tuple[NotificationTask, DigestSpec]]) -> int:
    """Fold claimed tasks into their recipients' open windows, opening (and scheduling the close of)
    those that are not; inside the caller's transaction. Returns how many windows were opened."""
    now = clock.now()
    opened = []
    with connection.cursor() as cursor:
        for task, spec in sorted(tasks, key=lambda pair: (pair[0].recipient, pair[0].kind, pair[1].key)):
            window_id = _window_for(cursor, recipient=task.recipient, kind=task.kind, spec=spec, now=now, opened=opened)
            cursor.execute(
                f"INSERT INTO {_EVENT} (window_id, notification_id, sender, message, data, created_at) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT (notification_id) DO NOTHING",
                [window_id, task.notification_id, task.sender, task.message, orjson.dumps(task.data).decode(),
                 datetime.fromisoformat(task.created_at) if task.created_at else now])
    return _closes_schedule(opened)


def digests_carry(*, notification_ids: Sequence[str]) -> int:
    """Digests that frequency caps stopped on every channel (delivery/caps.py): the events of each move
    into its recipient's open window for the same kind and key, opened now if there is none (as long
    as the one that closed), so that the next digest the caps let through tells them too; nothing is
    dropped. Inside the caller's transaction. Returns how many windows were opened."""
    ids = sorted({window_id for notification_id in notification_ids
                  if (window_id := digest_window_id(notification_id)) is not None})
    now = clock.now()
    opened: list = []
    with connection.cursor() as cursor:
        for old, recipient, kind, key, length in fetch_bound(
                f"SELECT id, recipient_external_id, kind, key, closes_at - opened_at FROM {_WINDOW} "
                "WHERE id = ANY(%s) AND closed_at IS NOT NULL ORDER BY recipient_external_id, kind, key", [ids]):
            spec = DigestSpec(key=key, window_seconds=max(1, round(length.total_seconds())))
            window_id = _window_for(cursor, recipient=recipient, kind=kind, spec=spec, now=now, opened=opened)
            cursor.execute(f"UPDATE {_EVENT} SET window_id = %s WHERE window_id = %s", [window_id, old])
            logger.info("digests: digest:%s of %s capped; its %d events wait for digest:%s", old, recipient,
                        cursor.rowcount, window_id)
    return _closes_schedule(opened)


def _closes_schedule(opened: Sequence[tuple[int, datetime, str]]) -> int:
    scheduler.schedule(*(scheduler.Item(kind=CLOSE, key=f"digest:{window_id}", due_at=closes_at, lane=recipient,
                                        payload={"window": window_id})
                         for window_id, closes_at, recipient in opened))
    if opened:
        DIGESTS_OPENED.inc(len(opened))
    return len(opened)


def _window_for(cursor, *, recipient: str, kind: str, spec: DigestSpec, now: datetime, opened: list) -> int:
    """The id of the recipient's open window of `kind` for the key, share-locked until the caller commits."""
    for _ in range(10):
        cursor.execute(f"SELECT id FROM {_WINDOW} WHERE recipient_external_id = %s AND kind = %s AND key = %s "
                       "AND closed_at IS NULL FOR SHARE", [recipient, kind, spec.key])
        if (row := cursor.fetchone()) is not None:
            return row[0]
        closes_at = now + timedelta(seconds=spec.window_seconds)
        cursor.execute(
            f"INSERT INTO {_WINDOW} (recipient_external_id, key, kind, opened_at, closes_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (recipient_external_id, kind, key) WHERE closed_at IS NULL DO NOTHING RETURNING id",
            [recipient, spec.key, kind, now, closes_at])
        if (row := cursor.fetchone()) is not None:
            opened.append((row[0], closes_at, recipient))
            return row[0]
        # Another worker opened it meanwhile (and we waited for its commit), or it closed: look again.
    raise RuntimeError(f"digest {spec.key!r} of {recipient!r}: no open window after 10 tries")


def digests_close_due(*, limit: int = 500) -> int:
    """Close the windows that are due: each becomes one notification queued in the outbox, in the
    transaction that takes its item from the scheduler. Returns how many items were released (call
    again while it returns `limit`). A window being folded into right now is closed on the next pass."""
    with transaction.atomic():
        items = scheduler.release(kind=CLOSE, limit=limit)
        if not items:
            return 0
        # (An item not in the form digests_fold writes names no window: taken and dropped, never raising,
        # since a raise would fail every pass of the due loop and hold up its other handlers.)
        window_of = [(window if type(window := item.payload.get("window")) is int else 0, item) for item in items]
        ids = sorted({window_id for window_id, _ in window_of})
        locked = [row[0] for row in fetch_bound(
            f"SELECT id FROM {_WINDOW} WHERE id = ANY(%s) AND closed_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED",
            [ids])]
        busy = {row[0] for row in fetch_bound(f"SELECT id FROM {_WINDOW} WHERE id = ANY(%s) AND closed_at IS NULL",
                                             [sorted(set(ids) - set(locked))])} if len(locked) < len(ids) else set()
        now = clock.now()
        windows = fetch_bound(
            f"UPDATE {_WINDOW} SET closed_at = %s WHERE id = ANY(%s) "
            "RETURNING id, recipient_external_id, key, kind, opened_at", [now, locked])
        tasks = _digests_of(windows=windows, closed_at=now)
        topics.SEND.enqueue_many(tasks)
        scheduler.done(item for window_id, item in window_of if window_id not in busy)
    if tasks:
        DIGESTS_CLOSED.inc(len(tasks))
        logger.info("digests: %d closed", len(tasks))
    return len(items)


def _digests_of(*, windows: Sequence[tuple], closed_at: datetime) -> list[NotificationTask]:
    """The notification each closed window becomes."""
    if not windows:
        return []
    ids = [w[0] for w in windows]
    totals = {window_id: (count, actor_count) for window_id, count, actor_count in fetch_bound(
        f"SELECT window_id, count(*), count(DISTINCT sender) FROM {_EVENT} WHERE window_id = ANY(%s) GROUP BY window_id",
        [ids])}
    actors: dict[int, list[str]] = {}
    for window_id, sender in fetch_bound(
            f"SELECT window_id, sender FROM (SELECT window_id, sender, row_number() OVER "
            f"(PARTITION BY window_id ORDER BY min(id)) AS n FROM {_EVENT} WHERE window_id = ANY(%s) "
            "GROUP BY window_id, sender) first WHERE n <= %s ORDER BY window_id, n", [ids, LISTED_ACTORS]):
        actors.setdefault(window_id, []).append(sender)
    events: dict[int, list[dict]] = {}
    for window_id, notification_id, sender, message, data, created_at in fetch_bound(
            f"SELECT window_id, notification_id, sender, message, data, created_at FROM (SELECT *, row_number() "
            f"OVER (PARTITION BY window_id ORDER BY id) AS n FROM {_EVENT} WHERE window_id = ANY(%s)) first "
            "WHERE n <= %s ORDER BY window_id, n", [ids, LISTED_EVENTS]):
        events.setdefault(window_id, []).append({
            "id": notification_id, "actor": sender, "message": message,
            "data": data if isinstance(data, dict) else _loads(data), "created_at": created_at.isoformat()})
    for listed_events in events.values():
        _within_budget(listed_events)
    templated = inbox_selectors.kinds_with_default_template(kinds=sorted({w[3] for w in windows}))

    tasks = []
    for window_id, recipient, key, kind, opened_at in windows:
        count, actor_count = totals.get(window_id, (0, 0))
        if not count:
            continue  # (a window is opened with its first event: never empty unless written otherwise)
        listed = actors.get(window_id, [])
        tasks.append(NotificationTask(
            notification_id=digest_notification_id(window_id),
            recipient=recipient,
            kind=kind,
            sender=listed[0] if listed else "",
            # The kind's template says it (with count, actors and events) in the recipient's locale; else this.
            message="" if kind in templated else digest_sentence(kind=kind, actors=listed, actor_count=actor_count,
                                                                 count=count),
            data={"digest": {"key": key, "count": count, "actors": listed, "actor_count": actor_count,
                             "events": events.get(window_id, []), "opened_at": opened_at.isoformat(),
                             "closed_at": closed_at.isoformat()}},
            created_at=closed_at.isoformat(),
        ))
    return tasks


def _within_budget(listed: list[dict]) -> None:
    """Drop the message and data of the events past LISTED_BYTES (in order), marking them truncated."""
    used = 0
    for event in listed:
        used += len(event["message"]) + len(orjson.dumps(event["data"]))
        if used > LISTED_BYTES:
            event.update(message="", data={}, truncated=True)


_VERBS = {"like": "liked your post", "follow": "followed you", "mention": "mentioned you"}


def digest_sentence(*, kind: str, actors: Sequence[str], actor_count: int, count: int) -> str:
    """The built-in text of a digest whose kind has no template: "tito and 3 others liked your post"."""
    verb = _VERBS.get(kind, f"sent you {count} {kind} notification{'s' if count != 1 else ''}")
    if not actors:
        return f"You have {count} new {kind} notification{'s' if count != 1 else ''}"
    others = actor_count - 1
    if others <= 0:
        who = actors[0]
    elif others == 1 and len(actors) > 1:
        who = f"{actors[0]} and {actors[1]}"
    else:
        who = f"{actors[0]} and {others} other{'s' if others != 1 else ''}"
    return f"{who} {verb}"


def _loads(raw) -> dict:
    return orjson.loads(raw) if raw else {}
