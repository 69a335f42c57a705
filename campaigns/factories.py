import factory

from campaigns.models import Campaign, CampaignKind


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    title = factory.Sequence(lambda n: f"Campaign {n}")
    body = "Everything is 20% off."
    kind = CampaignKind.OFFER
    segment = factory.LazyFunction(lambda: {"type": "ALL_USERS"})
