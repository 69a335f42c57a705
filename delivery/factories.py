"""factory_boy factories for the worker's ledgers."""

import factory

from delivery.models import ChannelDelivery, ChannelDeliveryStatus, Delivery, DeliveryOutcome


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
