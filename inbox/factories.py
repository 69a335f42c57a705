import factory
from django.utils import timezone

from core.messages import Kind
from inbox.models import Notification, Preference, Recipient


class RecipientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Recipient

    external_id = factory.Sequence(lambda n: f"user-{n}")
    email = factory.LazyAttribute(lambda r: f"{r.external_id}@example.com")


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    notification_id = factory.Faker("uuid4")
    recipient = factory.SubFactory(RecipientFactory)
    kind = Kind.FOLLOW
    sender = "someone"
    message = factory.Faker("sentence")
    created_at = factory.LazyFunction(timezone.now)


class PreferenceFactory(factory.django.DjangoModelFactory):
    """A recipient's opt-outs: none unless given (`kinds={"like": False}`, `channels={"email": False}`)."""

    class Meta:
        model = Preference
        django_get_or_create = ("recipient",)

    recipient = factory.SubFactory(RecipientFactory)
    kinds = factory.LazyFunction(dict)
    channels = factory.LazyFunction(dict)
