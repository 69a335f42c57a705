from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, time as wall_time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from campaigns import schedule, selectors
from campaigns.models import Campaign, CampaignStatus
from campaigns.segments import Segment, Subscribers, segment_parse
from core import broker, clock, metrics, scheduler, topics
from core.messages import CAMPAIGN_ZONE_ALL, CampaignChunk, CampaignCreated, EscalationSpec
from core.publisher import Chunker, ChunkPublisher

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 2.0
# The scheduler's kind for a held part of a campaign (send_at, or one time zone's local_time).
RELEASE = "campaign.release"


class CampaignConflict(Exception):
    """The campaign's status does not allow the change."""


class FanOutInterrupted(Exception):
    """The dispatcher was asked to stop mid-fan-out; the event stays uncommitted and is redone."""


def campaign_create(*, title: str, body: str, kind: str, segment: Segment, data: dict,
                    templates: Sequence[dict] = (), escalate: EscalationSpec | None = None,
                    send_at: datetime | None = None, local_time: wall_time | None = None) -> Campaign:
    """Store a campaign and, in the same transaction, queue its CampaignCreated event. `templates`:
    its own, each {"channel", "locale", and the parts}, parsed already (campaigns.serializers).

    With a `send_at` ahead, or a `local_time`, it is held instead (`scheduled`, campaign_schedule)."""
    stored = [{name: value for name, value in t.items() if value or name in ("channel", "locale")} for t in templates]
    held = local_time is not None or (send_at is not None and send_at > clock.now())
    with transaction.atomic():
        campaign = Campaign.objects.create(
            title=title, body=body, kind=kind, segment=segment.to_json(), data=data, templates=stored,
            escalate=escalate.encode() if escalate else None,
            send_at=send_at, local_time=local_time.strftime("%H:%M") if local_time is not None else "",
            status=CampaignStatus.SCHEDULED if held else CampaignStatus.QUEUED)
        if held:
            _campaign_schedule(campaign=campaign, segment=segment, send_at=send_at, local_time=local_time)
        else:
            topics.CAMPAIGNS.enqueue(CampaignCreated(campaign.id))
    return campaign


def _campaign_schedule(*, campaign: Campaign, segment: Segment, send_at: datetime | None,
                       local_time: wall_time | None) -> None:
    """Hold a new campaign in the scheduler: one item for all its recipients (`send_at`), or with
    `local_time` one per time zone its segment's recipients are in now (one GROUP BY), each due at the
    next `local_time` in that zone at or after `send_at` (now when absent or past). Never a row per
    recipient: each zone's recipients are found again when it is released (campaign_dispatch).

    The zone due last also fans out the recipients whose zone has no item (they joined the segment, or
    moved to a new zone, after this): late rather than never. One who moved from a zone not released yet
    into one released already gets nothing."""
    now = clock.now()
    start = max(send_at, now) if send_at is not None else now
    by_zone = selectors.recipients_by_zone(segment=segment) if local_time is not None else {
        CAMPAIGN_ZONE_ALL: selectors.recipient_count_for_segment(segment=segment)}
    if not by_zone:  # nobody yet: one part, in the default zone, for whoever is in the segment then
        by_zone = {settings.DEFAULT_TIMEZONE: 0}
    due = schedule.zones_due(start=start, local_time=local_time, recipients_by_zone=by_zone)
    last = max(due, key=lambda zone: (due[zone], zone), default=None)
    campaign.zones = {zone: {"due_at": at.isoformat(), "recipients": by_zone.get(zone, 0), "released_at": None,
                             "targeted": None, "dispatched": False, **({"rest": True} if zone == last and
                                                                      local_time is not None else {})}
                      for zone, at in due.items()}
    campaign.zones_left = len(due)
    campaign.scheduled = sum(zone["recipients"] for zone in campaign.zones.values())
    campaign.save(update_fields=["zones", "zones_left", "scheduled"])
    scheduler.schedule(*(scheduler.Item(kind=RELEASE, key=f"campaign:{campaign.id}:{zone}", due_at=at,
                                        lane=_lane(campaign.id), payload={
                                            "campaign": campaign.id, "zone": zone, "held": _held_why(zone, local_time)})
                         for zone, at in due.items()))


def _held_why(zone: str, local_time: wall_time | None) -> str:
    """What the admin's list of scheduled items says of a campaign's part."""
    if local_time is None:
        return "campaign send_at"
    return f"campaign local_time {local_time.strftime('%H:%M')} in {zone}"


def _lane(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


def campaigns_release_due(*, limit: int = 500) -> int:
    """Queue the held campaign parts that are due: each part's CampaignCreated event (with its zone)
    goes into the outbox in the transaction that takes its item from the scheduler, so a process killed
    anywhere queues it exactly once. A part of a campaign cancelled meanwhile is dropped. Returns how
    many items (`limit` at most: call again while it returns `limit`)."""
    with transaction.atomic():
        items = scheduler.take(kind=RELEASE, limit=limit)
        by_campaign: dict[int, list[str]] = {}
        for item in items:
            campaign_id, zone = item.payload.get("campaign"), item.payload.get("zone")
            if isinstance(campaign_id, int) and isinstance(zone, str):
                by_campaign.setdefault(campaign_id, []).append(zone)
            else:  # never written so by us
                logger.warning("campaigns: scheduled item %s is not a campaign part; dropped", item.key)
        now = clock.now().isoformat()
        events = []
        for campaign in Campaign.objects.select_for_update().filter(id__in=list(by_campaign)).order_by("id"):
            if campaign.status in (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED):
                continue
            for zone in by_campaign[campaign.id]:
                if zone in campaign.zones and campaign.zones[zone]["released_at"] is None:
                    campaign.zones[zone]["released_at"] = now
                    events.append(CampaignCreated(campaign.id, zone=zone))
            Campaign.objects.filter(id=campaign.id).update(zones=campaign.zones)
        topics.CAMPAIGNS.enqueue_many(events)
    if events:
        metrics.CAMPAIGN_PARTS_RELEASED.inc(len(events))
    return len(items)


def topic_notification_send(*, sender: str, key: str, kind: str, message: str, data: dict) -> Campaign:
    """A notification to every subscriber of a topic but its sender: a campaign whose segment is the
    topic's subscribers (so it fans out at the campaign rate, with its progress and cancel), whose
    content is the notification's. Each subscriber's notification is "<campaign id>:<recipient id>"."""
    segment = Subscribers(key=key, exclude=(sender,))
    with transaction.atomic():
        campaign = Campaign.objects.create(title="", body=message, kind=kind, sender=sender, segment=segment.to_json(),
                                           data=data)
        topics.CAMPAIGNS.enqueue(CampaignCreated(campaign.id))
    return campaign


def campaign_cancel(*, campaign: Campaign) -> Campaign:
    """No further deliveries: the dispatcher stops producing, the worker skips its tasks, and its parts
    still held by the scheduler are dropped."""
    with transaction.atomic():
        cancelled = Campaign.objects.filter(id=campaign.id, status__in=[
            CampaignStatus.SCHEDULED, CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED,
        ]).update(status=CampaignStatus.CANCELLED, cancelled_at=timezone.now())
        # Its parts still held are dropped; one being released now is locked, and finishes first (its
        # event then finds the campaign cancelled: the dispatcher fans nothing out).
        scheduler.cancel(kind=RELEASE, lane=_lane(campaign.id))
    campaign.refresh_from_db()
    if not cancelled and campaign.status != CampaignStatus.CANCELLED:
        raise CampaignConflict(f"Campaign {campaign.id} is {campaign.status}; only an unfinished campaign can be cancelled.")
    return campaign


def campaign_dispatch(
    *,
    campaign_id: int,
    publisher: ChunkPublisher,
    should_stop: Callable[[], bool] = lambda: False,
    zone: str | None = None,
) -> int:
    """Fan a campaign out to every recipient of its segment, in chunks of up to DISPATCHER_CHUNK_SIZE
    recipients that share a partition (the one their keys map to, as for a user-to-user notification),
    each standing for the tasks "<campaign id>:<recipient id>". Returns how many recipients.

    With `zone` (a held campaign's part, released by campaigns_release_due): only that part's
    recipients, those in that time zone (blank read as DEFAULT_TIMEZONE; CAMPAIGN_ZONE_ALL: all), and
    for the part due last also those in a zone the campaign has no part for. `targeted` and `released`
    then add up the parts, and the campaign completes only once every part has been fanned out.

    Idempotent: an event seen again for a campaign (or part) already dispatched does nothing; a fan-out
    interrupted half-way is redone from the start, and the worker's ledger drops the repeats.
    """
    campaign = Campaign.objects.filter(id=campaign_id).first()
    part = campaign.zones.get(zone) if campaign is not None and zone is not None else None
    if zone is not None:
        wanted = (CampaignStatus.SCHEDULED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED)
        if campaign is None or campaign.status not in wanted or part is None or part["dispatched"]:
            logger.info("dispatcher: campaign %s (zone %s) is %s; nothing to do", campaign_id, zone,
                        "done" if part else campaign.status if campaign else "missing")
            return 0
        Campaign.objects.filter(id=campaign_id, status__in=wanted).update(status=CampaignStatus.DISPATCHING)
        base = sum(p["targeted"] or 0 for name, p in campaign.zones.items() if name != zone)
    else:
        if campaign is None or campaign.status not in (CampaignStatus.QUEUED, CampaignStatus.DISPATCHING):
            logger.info("dispatcher: campaign %s is %s; nothing to do", campaign_id,
                        campaign.status if campaign else "missing")
            return 0
        Campaign.objects.filter(id=campaign_id, status=CampaignStatus.QUEUED).update(status=CampaignStatus.DISPATCHING)
        base = 0
    segment = segment_parse(campaign.segment)
    rest_beside = list(campaign.zones) if part is not None and part.get("rest") else ()

    started = last_report = time.monotonic()
    chunker = Chunker(partitions=publisher.begin(), size=settings.DISPATCHER_CHUNK_SIZE)

    def publish(chunks: list[tuple[int, list[str]]]) -> None:
        for partition, recipients in chunks:
            publisher.publish(CampaignChunk(campaign_id, tuple(recipients)), partition=partition)

    produced = 0
    # A part released after another (the first time: a redispatch counts its settled ones again) leaves
    # out the recipients an earlier part reached: they moved zone since.
    earlier = part is not None and part["targeted"] is None and any(
        other["released_at"] is not None for name, other in campaign.zones.items() if name != zone)
    for page in selectors.recipient_ids_for_segment(segment=segment, page_size=settings.DISPATCHER_PAGE_SIZE,
                                                    zone=zone, rest_beside=rest_beside,
                                                    not_settled_of=campaign_id if earlier else None):
        publish(chunker.add(page))
        produced += len(page)
        metrics.FANOUT_TASKS.inc(len(page))
        if should_stop():
            raise FanOutInterrupted(f"campaign {campaign_id}: stopped after {produced} recipients; the fan-out will be redone")
        if time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            if _campaign_targeted_update(campaign_id=campaign_id, targeted=base + produced, held=zone is not None) == 0:
                logger.info("dispatcher: campaign %s was cancelled after %d recipients; stopping its fan-out",
                            campaign_id, produced)
                break
            logger.info(
                "dispatcher: campaign %s: %d recipients dispatched, %.0f/s",
                campaign_id, produced, produced / (last_report - started),
            )
    publish(chunker.rest())
    publisher.flush()
    if zone is not None:
        _campaign_part_dispatched(campaign_id=campaign_id, zone=zone, targeted=produced)
    else:
        _campaign_dispatched(campaign_id=campaign_id, targeted=produced)
    elapsed = time.monotonic() - started
    logger.info(
        "dispatcher: campaign %s%s dispatched to %d recipients in %.1f s (%.0f/s)",
        campaign_id, f" (zone {zone})" if zone is not None else "", produced, elapsed,
        produced / elapsed if elapsed else 0,
    )
    return produced


def campaigns_redispatch_recent() -> int:
    """The broker lost notification tasks: fan out again the campaigns dispatched within the relay's
    retention window that have not completed (the ledger drops what was delivered already). Of a held
    campaign, only its parts released already (the others are still held, and fan out when due)."""
    since = timezone.now() - timedelta(seconds=settings.RELAY_RETENTION_SECONDS)
    redispatched = 0
    with transaction.atomic():
        for campaign in Campaign.objects.select_for_update().filter(status=CampaignStatus.DISPATCHED,
                                                                    dispatched_at__gte=since):
            if not campaign.zones:
                Campaign.objects.filter(id=campaign.id).update(status=CampaignStatus.DISPATCHING)
                topics.CAMPAIGNS.enqueue(CampaignCreated(campaign.id))
                redispatched += 1
                continue
            released = [zone for zone, part in campaign.zones.items() if part["released_at"] is not None]
            for zone in released:
                campaign.zones[zone]["dispatched"] = False
            Campaign.objects.filter(id=campaign.id).update(
                status=CampaignStatus.DISPATCHING, zones=campaign.zones,
                zones_left=sum(not part["dispatched"] for part in campaign.zones.values()))
            topics.CAMPAIGNS.enqueue_many([CampaignCreated(campaign.id, zone=zone) for zone in released])
            redispatched += 1
    return redispatched


def campaigns_recover_lost_topics(lost: list[str]) -> int:
    """The relay's hook for a broker that lost topics: when notification tasks were lost, dispatch
    the recent campaigns again. Returns how many."""
    if broker.NOTIFICATIONS_SEND not in lost:
        return 0
    redispatched = campaigns_redispatch_recent()
    logger.warning("campaigns: the broker lost notification tasks; dispatching %d recent campaigns again", redispatched)
    return redispatched


def _campaign_targeted_update(*, campaign_id: int, targeted: int, held: bool = False) -> int:
    """Keep `targeted` (and a held campaign's `released`) current during a long fan-out; returns 0 if
    the campaign is no longer dispatching."""
    return Campaign.objects.filter(id=campaign_id, status=CampaignStatus.DISPATCHING).update(
        targeted=targeted, **({"released": targeted} if held else {}))


def _campaign_part_dispatched(*, campaign_id: int, zone: str, targeted: int) -> None:
    """A held campaign's part is fanned out: record it, and complete the campaign if it was its last
    part and the worker is done. Under the campaign's row lock, so the worker's progress_add (which
    completes a dispatched campaign with no part left) sees either the part before or after."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(id=campaign_id, status=CampaignStatus.DISPATCHING).first()
        if campaign is None:  # cancelled meanwhile
            return
        campaign.zones[zone].update(targeted=targeted, dispatched=True)
        zones_left = sum(not part["dispatched"] for part in campaign.zones.values())
        total = sum(part["targeted"] or 0 for part in campaign.zones.values())
        now = timezone.now()
        done = zones_left == 0 and campaign.settled >= total
        Campaign.objects.filter(id=campaign_id).update(
            zones=campaign.zones, zones_left=zones_left, targeted=total, released=total, dispatched_at=now,
            status=CampaignStatus.COMPLETED if done else CampaignStatus.DISPATCHED,
            completed_at=now if done else None)


def _campaign_dispatched(*, campaign_id: int, targeted: int) -> None:
    """Every task is acknowledged: record the final count, completing at once if the worker is done."""
    now = timezone.now()
    done = Q(GreaterThanOrEqual(F("delivered") + F("skipped") + F("failed"), targeted))
    Campaign.objects.filter(id=campaign_id, status=CampaignStatus.DISPATCHING).update(
        targeted=targeted,
        dispatched_at=now,
        status=Case(When(done, then=Value(CampaignStatus.COMPLETED)), default=Value(CampaignStatus.DISPATCHED)),
        completed_at=Case(When(done, then=Value(now)), default=None),
    )


def campaign_progress_add(*, campaign_id: int, delivered: int = 0, skipped: int = 0, failed: int = 0) -> None:
    """Add a batch's outcomes to a campaign's counts in one UPDATE (one row lock per batch, not per
    delivery), completing a dispatched campaign whose settled count reaches its targeted count (and,
    held by time zone, with no part left to fan out)."""
    settled_after = F("delivered") + F("skipped") + F("failed") + (delivered + skipped + failed)
    completes = Q(GreaterThanOrEqual(settled_after, F("targeted")), status=CampaignStatus.DISPATCHED, zones_left=0)
    Campaign.objects.filter(id=campaign_id).update(
        delivered=F("delivered") + delivered,
        skipped=F("skipped") + skipped,
        failed=F("failed") + failed,
        status=Case(When(completes, then=Value(CampaignStatus.COMPLETED)), default=F("status")),
        completed_at=Case(When(completes, then=Value(timezone.now())), default=F("completed_at")),
    )
