import factory

from campaigns.models import Campaign
from core.messages import Kind


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    title = factory.Sequence(lambda n: f"Campaign {n}")
    body = "Everything is 20% off."
    kind = Kind.OFFER
    segment = factory.LazyFunction(lambda: {"type": "ALL_USERS"})
