from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from campaigns import selectors
from campaigns.models import Campaign, CampaignStatus
from campaigns.segments import Segment, Subscribers, segment_parse
from core import broker, metrics, topics
from core.messages import CampaignChunk, CampaignCreated, EscalationSpec
from core.publisher import Chunker, ChunkPublisher

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 2.0


class CampaignConflict(Exception):
    """The campaign's status does not allow the change."""


class FanOutInterrupted(Exception):
    """The dispatcher was asked to stop mid-fan-out; the event stays uncommitted and is redone."""


def campaign_create(*, title: str, body: str, kind: str, segment: Segment, data: dict,
                    templates: Sequence[dict] = (), escalate: EscalationSpec | None = None) -> Campaign:
    """Store a campaign and, in the same transaction, queue its CampaignCreated event. `templates`:
    its own, each {"channel", "locale", and the parts}, parsed already (campaigns.serializers)."""
    stored = [{name: value for name, value in t.items() if value or name in ("channel", "locale")} for t in templates]
    with transaction.atomic():
        campaign = Campaign.objects.create(title=title, body=body, kind=kind, segment=segment.to_json(), data=data,
                                           templates=stored, escalate=escalate.encode() if escalate else None)
        topics.CAMPAIGNS.enqueue(CampaignCreated(campaign.id))
    return campaign


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
    """No further deliveries: the dispatcher stops producing and the worker skips its tasks."""
    cancelled = Campaign.objects.filter(
        id=campaign.id, status__in=[CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED]
    ).update(status=CampaignStatus.CANCELLED, cancelled_at=timezone.now())
    campaign.refresh_from_db()
    if not cancelled and campaign.status != CampaignStatus.CANCELLED:
        raise CampaignConflict(f"Campaign {campaign.id} is {campaign.status}; only an unfinished campaign can be cancelled.")
    return campaign


def campaign_dispatch(
    *,
    campaign_id: int,
    publisher: ChunkPublisher,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Fan a campaign out to every recipient of its segment, in chunks of up to DISPATCHER_CHUNK_SIZE
    recipients that share a partition (the one their keys map to, as for a user-to-user notification),
    each standing for the tasks "<campaign id>:<recipient id>". Returns how many recipients.

    Idempotent: an event seen again for a campaign already dispatched does nothing; a fan-out
    interrupted half-way is redone from the start, and the worker's ledger drops the repeats.
    """
    campaign = Campaign.objects.filter(id=campaign_id).first()
    if campaign is None or campaign.status not in (CampaignStatus.QUEUED, CampaignStatus.DISPATCHING):
        logger.info("dispatcher: campaign %s is %s; nothing to do", campaign_id, campaign.status if campaign else "missing")
        return 0
    Campaign.objects.filter(id=campaign_id, status=CampaignStatus.QUEUED).update(status=CampaignStatus.DISPATCHING)
    segment = segment_parse(campaign.segment)

    started = last_report = time.monotonic()
    chunker = Chunker(partitions=publisher.begin(), size=settings.DISPATCHER_CHUNK_SIZE)

    def publish(chunks: list[tuple[int, list[str]]]) -> None:
        for partition, recipients in chunks:
            publisher.publish(CampaignChunk(campaign_id, tuple(recipients)), partition=partition)

    produced = 0
    for page in selectors.recipient_ids_for_segment(segment=segment, page_size=settings.DISPATCHER_PAGE_SIZE):
        publish(chunker.add(page))
        produced += len(page)
        metrics.FANOUT_TASKS.inc(len(page))
        if should_stop():
            raise FanOutInterrupted(f"campaign {campaign_id}: stopped after {produced} recipients; the fan-out will be redone")
        if time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            if _campaign_targeted_update(campaign_id=campaign_id, targeted=produced) == 0:
                logger.info("dispatcher: campaign %s was cancelled after %d recipients; stopping its fan-out",
                            campaign_id, produced)
                break
            logger.info(
                "dispatcher: campaign %s: %d recipients dispatched, %.0f/s",
                campaign_id, produced, produced / (last_report - started),
            )
    publish(chunker.rest())
    publisher.flush()
    _campaign_dispatched(campaign_id=campaign_id, targeted=produced)
    elapsed = time.monotonic() - started
    logger.info(
        "dispatcher: campaign %s dispatched to %d recipients in %.1f s (%.0f/s)",
        campaign_id, produced, elapsed, produced / elapsed if elapsed else 0,
    )
    return produced


def campaigns_redispatch_recent() -> int:
    """The broker lost notification tasks: fan out again the campaigns dispatched within the relay's
    retention window that have not completed (the ledger drops what was delivered already)."""
    since = timezone.now() - timedelta(seconds=settings.RELAY_RETENTION_SECONDS)
    redispatched = 0
    with transaction.atomic():
        for campaign in Campaign.objects.select_for_update().filter(status=CampaignStatus.DISPATCHED,
                                                                    dispatched_at__gte=since):
            Campaign.objects.filter(id=campaign.id).update(status=CampaignStatus.DISPATCHING)
            topics.CAMPAIGNS.enqueue(CampaignCreated(campaign.id))
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


def _campaign_targeted_update(*, campaign_id: int, targeted: int) -> int:
    """Keep `targeted` current during a long fan-out; returns 0 if the campaign is no longer dispatching."""
    return Campaign.objects.filter(id=campaign_id, status=CampaignStatus.DISPATCHING).update(targeted=targeted)


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
    delivery), completing a dispatched campaign whose settled count reaches its targeted count."""
    settled_after = F("delivered") + F("skipped") + F("failed") + (delivered + skipped + failed)
    completes = Q(GreaterThanOrEqual(settled_after, F("targeted")), status=CampaignStatus.DISPATCHED)
    Campaign.objects.filter(id=campaign_id).update(
        delivered=F("delivered") + delivered,
        skipped=F("skipped") + skipped,
        failed=F("failed") + failed,
        status=Case(When(completes, then=Value(CampaignStatus.COMPLETED)), default=F("status")),
        completed_at=Case(When(completes, then=Value(timezone.now())), default=F("completed_at")),
    )
