"""External sends that wait: quiet hours and escalations.

A held send is an ordinary `pending` channel delivery whose scheduled item (`channel.send`) is due later
than now; nothing else about it differs, so it is durable and released exactly as any send is (a worker
SIGKILLed before it is due changes nothing: the item is in PostgreSQL, the next worker releases it).

- **Quiet hours** (the recipient's preferences, in its time zone: inbox/quiet_hours.py): a send that
  would go out during them is due when they end. Urgent kinds (`alert`, registered kinds marked urgent)
  are never held.
- **Escalation** (a notification's `escalate`): its named channels are due `after_seconds` after the
  notification landed in the inbox (settle time, the scheduler's clock), later still if that falls in
  quiet hours; their item carries `unless` ("read" or "seen"), and when it is released the sender
  skips the send if the inbox row was read (or seen) by then (`escalations_check`).

The item's payload says why it waits (`held`), which the trace shows beside `next_attempt_at`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.messages import EscalationSpec
from inbox import quiet_hours as quiet
from inbox import selectors as inbox_selectors
from inbox import services as inbox_services

QUIET_HOURS = "quiet_hours"
ESCALATION = "escalation"


@dataclass(frozen=True, slots=True)
class Hold:
    """When a send is due instead of now, why (`reason`, `why`: the trace's text), and for an escalation
    what cancels it."""

    due_at: datetime
    reason: str  # QUIET_HOURS or ESCALATION (a metric's label)
    why: str
    unless: str = ""  # "read" or "seen" for an escalation

    def payload(self) -> dict:
        return {"held": self.why, **({"unless": self.unless} if self.unless else {})}


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivered notification's external sends, as the settle loop knows them."""

    notification_id: str
    kind: str  # the notification's (its campaign's, for a campaign task)
    recipient_pk: int
    channels: tuple[str, ...]
    escalate: EscalationSpec | None = None


def holds_of(*, pending: Sequence[Pending], now: datetime) -> dict[tuple[str, str], Hold]:
    """The sends among `pending` that wait, by (notification id, channel). Queries only when some
    recipient has quiet hours (one for them, and one for registered kinds' urgency)."""
    holds: dict[tuple[str, str], Hold] = {}
    for p in pending:
        if p.escalate is not None:
            due = now + timedelta(seconds=p.escalate.after_seconds)
            for channel in p.channels:
                if channel in p.escalate.channels:
                    holds[(p.notification_id, channel)] = Hold(
                        due, ESCALATION, f"escalation: sent then unless {p.escalate.unless}", p.escalate.unless)
    rules = inbox_services.quiet_hours_of(recipient_pks=sorted({p.recipient_pk for p in pending}))
    if not rules:
        return holds
    _, urgent = inbox_selectors.kind_rules(names={p.kind for p in pending if p.recipient_pk in rules})
    for p in pending:
        stored, tz_name = rules.get(p.recipient_pk, (None, ""))
        hours = quiet.QuietHours.of(stored)
        if hours is None or p.kind in urgent:
            continue
        tz = quiet.zone(tz_name)
        for channel in p.channels:
            held = holds.get((p.notification_id, channel))
            until = quiet.quiet_until(held.due_at if held else now, hours, tz)
            if until is None:
                continue
            why = f"quiet hours until {until.isoformat()}"
            holds[(p.notification_id, channel)] = (
                Hold(until, ESCALATION, f"{held.why}; {why}", held.unless) if held else Hold(until, QUIET_HOURS, why))
    return holds


def escalations_cancelled(*, checks: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Of these (notification id, unless) pairs, the escalations that reading cancelled: notification
    id -> the skip's reason ("read before escalation", "seen before escalation"). A notification without
    an inbox row (the recipient opted out of in-app) is never read: it is escalated."""
    wanted = dict(checks)
    states = inbox_selectors.read_states(notification_ids=list(wanted))
    cancelled = {}
    for notification_id, unless in wanted.items():
        seen_at, read_at = states.get(notification_id, (None, None))
        if (read_at if unless == "read" else seen_at or read_at) is not None:
            cancelled[notification_id] = f"{unless} before escalation"
    return cancelled
