"""Frequency caps: "at most 3 offer emails a day", per recipient, across every campaign and
user-to-user notification.

A cap (`FrequencyCap`: channel, kind or null for every kind, max, per_seconds) counts the deliveries
made on its channel to one recipient in a sliding window of `per_seconds`. A delivery is *made* when
the worker settles it: an inbox row written, or an email or webhook scheduled (whatever its attempts
then do: sent or attempted both count). Skips never count. A delivery that would go over any cap
matching its channel and kind is not made on that channel:

- every channel of the notification capped: the ledger says `skipped`, reason `capped` (its campaign
  counts it as skipped);
- some channels capped: the others go on; the ledger's outcome stays `delivered` with reason
  `capped: <channels>` (the trace shows it), and each capped external channel gets a ChannelDelivery
  row `skipped` with last_error `capped` (no send scheduled). A capped in-app channel has no row of
  its own (no inbox row): the ledger's reason names it.

How it is enforced (`caps_apply`, inside the batch's transaction, after the ledger claim so that a
repeat never uses up a cap):

1. The deliveries of the batch that some cap matches are the candidates, in batch order.
2. One statement locks a guard row per (recipient, channel) of the candidates, creating it if
   missing (`INSERT ... ON CONFLICT DO UPDATE`, in a fixed order so two workers cannot deadlock on
   them). Two workers that briefly both own a recipient (a rebalance) take turns there: the second
   waits for the first's commit.
3. One statement then counts, per candidate (recipient, channel) and matching cap, the CapEvents in
   each cap's window. It is a statement of its own on purpose: under READ COMMITTED each statement
   sees what was committed when it started, so a count started after the lock is granted sees the
   events of whoever held it before (a count inside the locking statement would not).
4. A pure function (`caps_decide`) walks the candidates in order, counting each one it lets through,
   so the fifth like of one batch sees the four before it.
5. One statement writes the CapEvents of the deliveries let through; at most one more fixes the
   ledger rows of the capped ones, and one writes their skipped channel rows.

Why a guard row and not an advisory lock per (recipient, channel): a batch holds up to
WORKER_BATCH_SIZE (5,000) recipients, and advisory locks live in PostgreSQL's shared lock table
(`max_locks_per_transaction` × connections, 6,400 slots by default), which a few large batches
would exhaust ("out of shared memory"); row locks are kept in the rows themselves. Its cost is one
small row per (recipient, channel) that caps ever counted, updated in place (HOT) once per batch,
and purged with the events (delivery/retention.py). Why not a conditional UPDATE of a counter: a
counter is a fixed window or a token bucket, which lets `max` through twice within one window at
its edge (or refills early); a sliding window needs the deliveries' times.

What it costs: nothing when no cap exists (the caps are read once every CACHE_SECONDS per process,
so a new or deleted cap applies within that) and nothing for batches whose deliveries no cap
matches; otherwise three statements per batch, whatever its size. A campaign chunk's in-app set
statement (delivery.services._chunk_deliver_in_app) enforces the in-app caps that match its kind
itself (`chunk_sql`), after one statement that locks the chunk's guard rows: its recipients over a
cap get a ledger row `skipped`, `capped`, the others their inbox row and a CapEvent, so a capped
campaign keeps the fan-out's one statement per chunk (plus the lock). A campaign with templates of
its own (whose set path renders per recipient) and an in-app cap on its kind settles its recipients
as tasks, through `caps_apply`. Sends held by quiet hours and escalations are counted when settled.

Digests: a notification folded into a digest is not delivered, so it is not capped; the digest
notification is, like any other, but one capped on every channel is not dropped: its ledger says
`digested`, `capped: into the next digest`, and its events move into the recipient's next window for
the same kind and key (opened then, as long as the one that closed: `digests_carry`), so the next
digest the caps let through tells them too. CapEvents are written only for deliveries a cap matched, so a new
cap counts from its creation (or from the oldest event another cap on that channel recorded).
PostgreSQL only (as digests): on SQLite caps are not enforced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from core.db import bulk_insert, fetch_bound
from core.messages import Channel, NotificationTask
from core.metrics import CAPPED
from delivery.models import (
    CapEvent,
    CapGuard,
    ChannelDelivery,
    ChannelDeliveryStatus,
    Delivery,
    DeliveryOutcome,
    FrequencyCap,
    is_digest,
)
from delivery.routing import Route

logger = logging.getLogger(__name__)

CHANNELS = (Channel.IN_APP.value, Channel.EMAIL.value, Channel.WEBHOOK.value)
MAX_MIN, MAX_MAX = 1, 10_000
PER_SECONDS_MIN, PER_SECONDS_MAX = 1, 30 * 24 * 3600
CACHE_SECONDS = 5.0
CAPPED_REASON = "capped"

IN_APP = _IN_APP = Channel.IN_APP.value


@dataclass(frozen=True, slots=True)
class CapRule:
    id: int
    channel: str
    kind: str | None
    max: int
    per_seconds: int

    def matches(self, channel: str, kind: str) -> bool:
        return self.channel == channel and (self.kind is None or self.kind == kind)


# ---- the caps, remembered per process ----

_cache_lock = threading.Lock()
_cache: tuple[float, tuple[CapRule, ...]] | None = None


def caps_active() -> tuple[CapRule, ...]:
    """Every cap, read at most once every CACHE_SECONDS per process (the common answer, none, costs nothing)."""
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    rules = tuple(CapRule(c.id, c.channel, c.kind, c.max, c.per_seconds)
                  for c in FrequencyCap.objects.order_by("id"))
    with _cache_lock:
        _cache = (now, rules)
    return rules


def caps_forget() -> None:
    """Read the caps again at the next batch (after a change in this process; tests)."""
    global _cache
    with _cache_lock:
        _cache = None


def in_app_rules(*, kind: str) -> tuple[CapRule, ...]:
    """The in-app caps that match this kind (a campaign chunk's set statement enforces them)."""
    return tuple(rule for rule in caps_active() if rule.matches(_IN_APP, kind))


# ---- services ----

def frequency_cap_create(*, channel: str, kind: str | None, max: int, per_seconds: int) -> FrequencyCap:  # noqa: A002
    cap = FrequencyCap.objects.create(channel=channel, kind=kind, max=max, per_seconds=per_seconds)
    transaction.on_commit(caps_forget)
    caps_forget()
    return cap


def frequency_cap_delete(*, cap: FrequencyCap) -> None:
    cap.delete()
    transaction.on_commit(caps_forget)
    caps_forget()


# ---- the decision: a pure function ----

@dataclass(frozen=True, slots=True)
class Candidate:
    """One delivery on one channel that at least one cap matches."""

    notification_id: str
    recipient: str
    channel: str
    kind: str


def caps_decide(*, candidates: Sequence[Candidate], rules: Sequence[CapRule],
                counts: Mapping[tuple[str, str, int], int]) -> tuple[list[Candidate], list[Candidate]]:
    """Walk the candidates in order: one goes through when every cap matching its channel and kind
    has counted fewer than its `max` (`counts[(recipient, channel, cap id)]`: the deliveries already
    in that cap's window), and then counts for each of those caps. Returns (let through, capped)."""
    used: defaultdict[tuple[str, str, int], int] = defaultdict(int, counts)
    through, capped = [], []
    for candidate in candidates:
        matching = [r for r in rules if r.matches(candidate.channel, candidate.kind)]
        keys = [(candidate.recipient, candidate.channel, r.id) for r in matching]
        if any(used[key] >= rule.max for key, rule in zip(keys, matching)):
            capped.append(candidate)
            continue
        for key in keys:
            used[key] += 1
        through.append(candidate)
    return through, capped


# The ledger's reason for a digest every channel of which was capped: its events wait for the next one.
CARRIED_REASON = "capped: into the next digest"


def route_capped(decision: Route, capped_channels: Iterable[str], *, digest: bool = False) -> Route:
    """The route left once some of its channels are capped. A `digest` capped on every channel is not
    dropped: its events are carried into the recipient's next digest (delivery.digests.digests_carry)."""
    capped = set(capped_channels)
    if not capped:
        return decision
    in_app = decision.in_app and _IN_APP not in capped
    external = tuple(c for c in decision.external if c not in capped)
    if not in_app and not external:
        return Route(DeliveryOutcome.DIGESTED, CARRIED_REASON) if digest else Route(DeliveryOutcome.SKIPPED, CAPPED_REASON)
    named = [c for c in ((_IN_APP,) if decision.in_app else ()) + decision.external if c in capped]
    return Route(DeliveryOutcome.DELIVERED, f"{CAPPED_REASON}: {', '.join(named)}", in_app=in_app, external=external)


# ---- enforcement in the worker's batch ----

_EVENT = CapEvent._meta.db_table
_GUARD = CapGuard._meta.db_table
# A guard row is locked by every batch that counts on it, but its `used_at` (what retention reads) is
# written again only once a minute: ON CONFLICT DO UPDATE locks the conflicting row even when its
# WHERE is false, and a lock without a new row version costs far less (no new tuple, no index entry).
_GUARD_STALE = f"WHERE {_GUARD}.used_at < EXCLUDED.used_at - interval '60 seconds'"
_LEDGER = Delivery._meta.db_table


@dataclass
class CapResult:
    counted: int = 0  # CapEvents written
    capped: int = 0  # deliveries not made on a channel
    skipped: int = 0  # notifications skipped altogether (every channel capped)


def caps_apply(*, tasks: Sequence[NotificationTask], claimed: set[str], routes: dict[str, Route],
               campaigns: Mapping[int, object], now: datetime) -> CapResult:
    """Enforce the caps on the claimed tasks' routes (module docstring), inside the batch's
    transaction: `routes` is changed in place for the capped ones, whose ledger rows are corrected
    and whose capped external channels get a skipped ChannelDelivery. A campaign task's kind is its
    campaign's."""
    result = CapResult()
    rules = caps_active()
    if not rules or connection.vendor != "postgresql":
        return result
    candidates = []
    for task in tasks:
        decision = routes.get(task.notification_id)
        if task.notification_id not in claimed or decision is None or not decision.delivered:
            continue
        campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
        kind = campaign.kind if campaign is not None else task.kind
        for channel in ((_IN_APP,) if decision.in_app else ()) + decision.external:
            if any(rule.matches(channel, kind) for rule in rules):
                candidates.append(Candidate(task.notification_id, task.recipient, channel, kind))
    if not candidates:
        return result

    pairs = sorted({(c.recipient, c.channel) for c in candidates})
    recipients, channels = [p[0] for p in pairs], [p[1] for p in pairs]
    fetch_bound(
        f"INSERT INTO {_GUARD} (recipient_external_id, channel, used_at) "
        "SELECT k.r, k.c, %s FROM unnest(%s::text[], %s::text[]) AS k(r, c) ORDER BY k.r, k.c "
        f"ON CONFLICT (recipient_external_id, channel) DO UPDATE SET used_at = EXCLUDED.used_at {_GUARD_STALE}",
        [now, recipients, channels])
    wanted = [r for r in rules if any(r.channel == ch for ch in set(channels))]
    counts = {(r, c, cap_id): n for r, c, cap_id, n in fetch_bound(
        f"""SELECT k.r, k.c, cap.id,
                   (SELECT count(*) FROM {_EVENT} e
                    WHERE e.recipient_external_id = k.r AND e.channel = k.c
                      AND e.at > %s::timestamptz - make_interval(secs => cap.per)
                      AND (cap.kind IS NULL OR e.kind = cap.kind))
            FROM unnest(%s::text[], %s::text[]) AS k(r, c)
            JOIN unnest(%s::bigint[], %s::text[], %s::text[], %s::int[]) AS cap(id, c, kind, per) ON cap.c = k.c""",
        [now, recipients, channels, [r.id for r in wanted], [r.channel for r in wanted], [r.kind for r in wanted],
         [r.per_seconds for r in wanted]])}
    through, capped = caps_decide(candidates=candidates, rules=rules, counts=counts)

    bulk_insert(model=CapEvent, columns=("recipient_external_id", "channel", "kind", "notification_id"),
                rows=[(c.recipient, c.channel, c.kind, c.notification_id) for c in through], same={"at": now})
    result.counted, result.capped = len(through), len(capped)
    if not capped:
        return result

    by_task: defaultdict[str, list[str]] = defaultdict(list)
    for c in capped:
        by_task[c.notification_id].append(c.channel)
        CAPPED.labels(channel=c.channel).inc()
    ledger = []
    for notification_id, chans in by_task.items():
        routes[notification_id] = new = route_capped(routes[notification_id], chans, digest=is_digest(notification_id))
        ledger.append((notification_id, new.outcome, new.reason))
        result.skipped += not new.delivered
    fetch_bound(
        f"UPDATE {_LEDGER} d SET outcome = u.o, reason = u.r "
        "FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(id, o, r) WHERE d.notification_id = u.id",
        [[x[0] for x in ledger], [x[1] for x in ledger], [x[2] for x in ledger]])
    recipient_of = {t.notification_id: t for t in tasks}
    skipped_rows = [(c.notification_id, c.channel, c.recipient, recipient_of[c.notification_id].campaign_id,
                     ChannelDeliveryStatus.SKIPPED, CAPPED_REASON)
                    for c in capped if c.channel != _IN_APP]
    if skipped_rows:
        bulk_insert(model=ChannelDelivery, columns=("notification_id", "channel", "recipient_external_id", "campaign_id",
                                                    "status", "last_error"),
                    rows=skipped_rows, ignore_conflicts_on=("notification_id", "channel"),
                    same={"attempts": 0, "updated_at": now, "content": {}, "origin_topic": ""})
    logger.debug("caps: %d deliveries counted, %d capped (%d notifications skipped)", result.counted,
                 result.capped, result.skipped)
    return result


def guards_lock(*, recipients: Iterable[str], channel: str, now: datetime) -> None:
    """Lock (creating them if missing) the guard rows of these recipients on one channel, in one
    statement, in the same order in every process; held until the transaction ends."""
    ids = sorted(set(recipients))
    fetch_bound(
        f"INSERT INTO {_GUARD} (recipient_external_id, channel, used_at) "
        "SELECT k.r, %s, %s FROM unnest(%s::text[]) AS k(r) ORDER BY k.r "
        f"ON CONFLICT (recipient_external_id, channel) DO UPDATE SET used_at = EXCLUDED.used_at {_GUARD_STALE}",
        [channel, now, ids])


def chunk_sql(*, ledger: str, inbox: str) -> tuple[str, str, str, str]:
    """The parts of a campaign chunk's set statement (delivery.services._chunk_deliver_in_app) that
    enforce in-app caps, with its guard rows locked before it: a CTE `capped` of the plain recipients
    over any of the caps (parameters: their max, kind and per_seconds arrays, and now), the condition
    that leaves them out of the inbox insert, the CTEs that count the inserted rows (a CapEvent each:
    the prefix's length + 1, the kind, now) and write the capped ones' ledger rows `skipped` (the
    prefix, the campaign id, settled_at, the prefix), and the count of those."""
    return (
        f""", capped AS (
            SELECT r.ext FROM r
            WHERE r.pk IS NOT NULL AND NOT r.special
              AND EXISTS (
                SELECT 1 FROM unnest(%s::int[], %s::text[], %s::int[]) AS cap(max, kind, per)
                WHERE (SELECT count(*) FROM {_EVENT} e
                       WHERE e.recipient_external_id = r.ext AND e.channel = '{_IN_APP}'
                         AND e.at > %s::timestamptz - make_interval(secs => cap.per)
                         AND (cap.kind IS NULL OR e.kind = cap.kind)) >= cap.max)
        )""",
        """
              AND r.ext NOT IN (SELECT ext FROM capped)""",
        f""", ev AS (
            INSERT INTO {_EVENT} (recipient_external_id, channel, kind, at, notification_id)
            SELECT substr(ins.notification_id, %s), '{_IN_APP}', %s, %s, ins.notification_id FROM ins
        ), led AS (
            INSERT INTO {ledger} (notification_id, recipient_external_id, campaign_id, outcome, reason, settled_at)
            SELECT %s || capped.ext, capped.ext, %s, '{DeliveryOutcome.SKIPPED.value}', '{CAPPED_REASON}', %s
            FROM capped
            WHERE NOT EXISTS (SELECT 1 FROM {inbox} n WHERE n.notification_id = %s || capped.ext OFFSET 0)
            ON CONFLICT (notification_id) DO NOTHING
            RETURNING 1
        )""",
        "(SELECT count(*) FROM led)",
    )


def cap_window_longest() -> int:
    """The longest window of any cap, in seconds (0 without caps): what retention keeps."""
    return max((c.per_seconds for c in FrequencyCap.objects.all()), default=0)
