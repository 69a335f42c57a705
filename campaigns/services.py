from __future__ import annotations

from django.db.models import Case, F, Q, Value, When
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus


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
