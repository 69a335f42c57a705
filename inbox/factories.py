import factory
from django.utils import timezone

from inbox.models import Notification, NotificationKind, Recipient


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
    kind = NotificationKind.FOLLOW
    sender = "someone"
    message = factory.Faker("sentence")
    created_at = factory.LazyFunction(timezone.now)
