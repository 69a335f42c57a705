"""The query parameters of the campaigns' list, as a FilterSet (an unknown value is a 400 listing the valid ones)."""

from django_filters import rest_framework as filters

from campaigns.models import Campaign, CampaignStatus
from core.filters import ChoiceFilter
from inbox.filters import KindFilter


class CampaignFilter(filters.FilterSet):
    status = ChoiceFilter(choices=CampaignStatus.choices)
    # Any kind: a notification sent to a topic is a campaign of its own (user-to-user or registered) kind.
    kind = KindFilter()

    class Meta:
        model = Campaign
        fields = ["status", "kind"]
