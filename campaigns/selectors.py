from __future__ import annotations

from campaigns.models import Campaign


def campaigns_by_id(*, ids: set[int]) -> dict[int, Campaign]:
    if not ids:
        return {}
    return Campaign.objects.in_bulk(ids)
