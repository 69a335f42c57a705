"""The query parameters of the campaigns' list, as a FilterSet (an unknown value is a 400 listing the valid ones)."""

from django_filters import rest_framework as filters

from campaigns.models import Campaign, CampaignStatus
from core.filters import ChoiceFilter
from core.messages import CAMPAIGN_KINDS, kind_choices


class CampaignFilter(filters.FilterSet):
    status = ChoiceFilter(choices=CampaignStatus.choices)
    kind = ChoiceFilter(choices=kind_choices(CAMPAIGN_KINDS))

    class Meta:
        model = Campaign
        fields = ["status", "kind"]
