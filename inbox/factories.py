import factory
from django.utils import timezone

from core.messages import Kind
from inbox.models import Notification, NotificationKind, Preference, Recipient, Subscription, Template


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


class NotificationKindFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NotificationKind

    name = factory.Sequence(lambda n: f"kind-{n}")


class TemplateFactory(factory.django.DjangoModelFactory):
    """A default-locale in-app template of `like` unless given."""

    class Meta:
        model = Template

    kind = Kind.LIKE
    channel = "in_app"
    locale = factory.Sequence(lambda n: ["", "de", "fr", "it", "es"][n % 5] if n < 5 else f"en-{['GB', 'US', 'AU', 'CA', 'IE'][n % 5]}")
    title = "New like"
    body = "{{ actor }} liked {{ data.post }}"


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    key = factory.Sequence(lambda n: f"post:{n}")
    recipient = factory.SubFactory(RecipientFactory)
