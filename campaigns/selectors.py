from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Max, QuerySet

from campaigns.models import Campaign
from campaigns.segments import Segment, segment_recipients
from inbox.models import Recipient


def campaigns_by_id(*, ids: set[int]) -> dict[int, Campaign]:
    if not ids:
        return {}
    return Campaign.objects.in_bulk(ids)


def campaign_list() -> QuerySet[Campaign]:
    """Every campaign; the list's FilterSet (`campaigns.filters.CampaignFilter`) narrows it."""
    return Campaign.objects.all()


def recipient_ids_for_segment(*, segment: Segment, page_size: int) -> Iterator[list[str]]:
    """Stream the user ids a segment matches, a keyset page at a time (never all in memory).

    The id range is frozen at the start: recipients added during the fan-out are not included.
    """
    upper = Recipient.objects.aggregate(top=Max("id"))["top"]
    if upper is None:
        return
    matching = segment_recipients(segment).filter(id__lte=upper).order_by("id")
    last_id = 0
    while True:
        page = list(matching.filter(id__gt=last_id).values_list("id", "external_id")[:page_size])
        if not page:
            return
        last_id = page[-1][0]
        yield [external_id for _, external_id in page]
