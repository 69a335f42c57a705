from __future__ import annotations

from collections.abc import Collection, Iterator

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Value
from django.db.models.functions import Coalesce, NullIf

from campaigns.models import Campaign, CampaignStatus
from campaigns.segments import Segment, segment_recipients
from core.messages import CAMPAIGN_ZONE_ALL
from inbox.models import Recipient


def campaigns_by_id(*, ids: set[int]) -> dict[int, Campaign]:
    if not ids:
        return {}
    return Campaign.objects.in_bulk(ids)


def campaign_list() -> QuerySet[Campaign]:
    """Every campaign; the list's FilterSet (`campaigns.filters.CampaignFilter`) narrows it."""
    return Campaign.objects.all()


def _zone_of_recipient():
    """A recipient's time zone name, blank read as DEFAULT_TIMEZONE."""
    return Coalesce(NullIf("timezone", Value("")), Value(settings.DEFAULT_TIMEZONE))


def recipients_by_zone(*, segment: Segment) -> dict[str, int]:
    """How many of a segment's recipients are in each time zone (blank: DEFAULT_TIMEZONE), in one
    GROUP BY query."""
    rows = (segment_recipients(segment).order_by().annotate(zone=_zone_of_recipient())
            .values("zone").annotate(count=Count("id", distinct=True)).values_list("zone", "count"))
    return dict(rows)


def recipient_count_for_segment(*, segment: Segment) -> int:
    return segment_recipients(segment).order_by().values("id").distinct().count()


def _in_zone(recipients: QuerySet[Recipient], *, zone: str | None, rest_beside: Collection[str]) -> QuerySet[Recipient]:
    """Those of `recipients` in `zone` (None or CAMPAIGN_ZONE_ALL: all); with `rest_beside`, also those
    whose zone is none of these (recipients in a zone the campaign had no part for)."""
    if zone is None or zone == CAMPAIGN_ZONE_ALL:
        return recipients
    wanted = Q(recipient_zone=zone)
    if rest_beside:
        wanted |= ~Q(recipient_zone__in=list(rest_beside))
    return recipients.alias(recipient_zone=_zone_of_recipient()).filter(wanted)


def recipient_ids_for_segment(*, segment: Segment, page_size: int, zone: str | None = None,
                              rest_beside: Collection[str] = ()) -> Iterator[list[str]]:
    """Stream the user ids a segment matches, a keyset page at a time (never all in memory); with
    `zone`, only its recipients in that time zone (and with `rest_beside`, those in none of them).

    The id range is frozen at the start: recipients added during the fan-out are not included.
    """
    upper = Recipient.objects.aggregate(top=Max("id"))["top"]
    if upper is None:
        return
    matching = _in_zone(segment_recipients(segment), zone=zone, rest_beside=rest_beside).filter(
        id__lte=upper).order_by("id")
    last_id = 0
    while True:
        page = list(matching.filter(id__gt=last_id).values_list("id", "external_id")[:page_size])
        if not page:
            return
        last_id = page[-1][0]
        yield [external_id for _, external_id in page]


def campaign_of_part(*, payload: object) -> Campaign | None:
    """The unfinished campaign a held part's scheduler item (campaigns.services.RELEASE) names."""
    campaign_id = payload.get("campaign") if isinstance(payload, dict) else None
    if type(campaign_id) is not int:
        return None
    return Campaign.objects.filter(id=campaign_id).exclude(
        status__in=(CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)).first()
