"""factory_boy factories for the worker's ledgers."""

import factory
from django.utils import timezone

from delivery.models import (
    CapEvent,
    CapGuard,
    ChannelDelivery,
    ChannelDeliveryStatus,
    Delivery,
    DeliveryOutcome,
    DigestEvent,
    DigestWindow,
    FrequencyCap,
)


class DeliveryFactory(factory.django.DjangoModelFactory):
    """A settled ledger row: a delivered user-to-user notification."""

    class Meta:
        model = Delivery

    notification_id = factory.Faker("uuid4")
    recipient_external_id = factory.Sequence(lambda n: f"user-{n}")
    outcome = DeliveryOutcome.DELIVERED


class ChannelDeliveryFactory(factory.django.DjangoModelFactory):
    """A webhook send waiting for its first attempt."""

    class Meta:
        model = ChannelDelivery

    notification_id = factory.Faker("uuid4")
    channel = "webhook"
    recipient_external_id = factory.Sequence(lambda n: f"user-{n}")
    status = ChannelDeliveryStatus.PENDING
    # `content` stays the model's default (empty): a test that sends the row gives the content it needs.


class FrequencyCapFactory(factory.django.DjangoModelFactory):
    """At most 3 in-app notifications of any kind an hour."""

    class Meta:
        model = FrequencyCap

    channel = "in_app"
    kind = None
    max = 3
    per_seconds = 3600


class CapEventFactory(factory.django.DjangoModelFactory):
    """One in-app delivery a cap counted, now."""

    class Meta:
        model = CapEvent

    recipient_external_id = factory.Sequence(lambda n: f"user-{n}")
    channel = "in_app"
    kind = "like"
    at = factory.LazyFunction(timezone.now)
    notification_id = factory.Faker("uuid4")


class CapGuardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CapGuard

    recipient_external_id = factory.Sequence(lambda n: f"user-{n}")
    channel = "in_app"
    used_at = factory.LazyFunction(timezone.now)


class DigestWindowFactory(factory.django.DjangoModelFactory):
    """An open digest window of five minutes."""

    class Meta:
        model = DigestWindow

    recipient_external_id = factory.Sequence(lambda n: f"user-{n}")
    key = factory.Sequence(lambda n: f"post:{n}")
    kind = "like"
    opened_at = factory.LazyFunction(timezone.now)
    closes_at = factory.LazyAttribute(lambda w: w.opened_at + timezone.timedelta(minutes=5))


class DigestEventFactory(factory.django.DjangoModelFactory):
    """A like folded into a window."""

    class Meta:
        model = DigestEvent

    window = factory.SubFactory(DigestWindowFactory)
    notification_id = factory.Faker("uuid4")
    sender = factory.Sequence(lambda n: f"actor-{n}")
    created_at = factory.LazyFunction(timezone.now)
