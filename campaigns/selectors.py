from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

from django.conf import settings
from django.db.models import CharField, Count, Exists, Max, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Concat, NullIf

from campaigns.models import Campaign, CampaignStatus
from campaigns.segments import Segment, SegmentError, segment_parse, segment_recipients
from core.messages import CAMPAIGN_ZONE_ALL
from inbox.models import Notification, Recipient


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


# What says a campaign's notification to a recipient was settled already, beside its inbox row: the
# ledger's (delivery.apps registers it; the ledger is a layer above). Each takes the campaign id and
# gives a condition on Recipient that holds for the recipients already settled.
SettledCondition = Callable[[int], Exists]
_settled_conditions: list[SettledCondition] = []


def settled_condition_register(condition: SettledCondition) -> None:
    if condition not in _settled_conditions:
        _settled_conditions.append(condition)


def _settled_for(campaign_id: int) -> list[Exists]:
    """Conditions on Recipient true for those whose notification of this campaign was settled."""
    inbox_row = Exists(Notification.objects.filter(notification_id=Concat(
        Value(f"{campaign_id}:"), OuterRef("external_id"), output_field=CharField())))
    return [inbox_row, *(condition(campaign_id) for condition in _settled_conditions)]


def recipient_ids_for_segment(*, segment: Segment, page_size: int, zone: str | None = None,
                              rest_beside: Collection[str] = (),
                              not_settled_of: int | None = None) -> Iterator[list[str]]:
    """Stream the user ids a segment matches, a keyset page at a time (never all in memory); with
    `zone`, only its recipients in that time zone (and with `rest_beside`, those in none of them); with
    `not_settled_of` (a campaign id), not those whose notification of that campaign was settled already
    (a recipient who moved from a zone released earlier: found from outside, counted twice, it kept
    the campaign from ever completing).

    The id range is frozen at the start: recipients added during the fan-out are not included.
    """
    upper = Recipient.objects.aggregate(top=Max("id"))["top"]
    if upper is None:
        return
    matching = _in_zone(segment_recipients(segment), zone=zone, rest_beside=rest_beside).filter(
        id__lte=upper).order_by("id")
    if not_settled_of is not None:
        for settled in _settled_for(not_settled_of):
            matching = matching.exclude(settled)
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


def campaign_targets(*, campaign: Campaign, external_id: str) -> bool:
    """Whether the campaign's segment holds this recipient now (one query; False for a segment that
    does not parse, which a stored campaign never has)."""
    try:
        segment = segment_parse(campaign.segment)
    except SegmentError:
        return False
    return segment_recipients(segment).filter(external_id=external_id).exists()
