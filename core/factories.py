"""factory_boy factories for the bottom layer's models (and Django's user, which IdempotencyKey names)."""

import hashlib

import factory
from django.conf import settings
from django.utils import timezone

from core.models import (
    BrokerTopic,
    ConsumerHeartbeat,
    DeadLetter,
    DeadLetterReason,
    IdempotencyKey,
    OutboxEvent,
    ScheduledItem,
)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = settings.AUTH_USER_MODEL
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"client-{n}")


class OutboxEventFactory(factory.django.DjangoModelFactory):
    """A pending event (`published_at` unset)."""

    class Meta:
        model = OutboxEvent

    topic = "notifications.send"
    key = factory.Sequence(str)
    payload = b"{}"


class DeadLetterFactory(factory.django.DjangoModelFactory):
    """A waiting dead letter of a channel's send; `invalid_payload=True`: a record that was not ours."""

    class Meta:
        model = DeadLetter

    class Params:
        invalid_payload = factory.Trait(
            reason=DeadLetterReason.INVALID_PAYLOAD, error="not JSON", notification_id="", channel="",
            recipient_external_id="", attempts=0, original_topic="notifications.send", payload=b"poison",
        )

    reason = DeadLetterReason.RETRIES_EXHAUSTED
    error = "HTTP 503"
    notification_id = factory.Faker("uuid4")
    channel = "webhook"
    recipient_external_id = factory.Sequence(lambda n: f"user-{n}")
    attempts = 4
    original_topic = "notifications.retry"
    payload = b"{}"


class ConsumerHeartbeatFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConsumerHeartbeat

    process = factory.Sequence(lambda n: f"worker@host:{1000 + n}")
    group = "notification-workers"
    last_poll_at = factory.LazyFunction(timezone.now)
    lag = factory.LazyFunction(lambda: {"notifications.send[0]": 0})


class IdempotencyKeyFactory(factory.django.DjangoModelFactory):
    """A finished request's key: the answer it got, for a repeat to replay."""

    class Meta:
        model = IdempotencyKey

    class Params:
        key = factory.Sequence(lambda n: f"key-{n}")

    user = factory.SubFactory(UserFactory)
    scoped_key = factory.LazyAttribute(lambda o: f"{o.user.pk}:{o.key}")
    request_fingerprint = factory.LazyAttribute(lambda o: hashlib.sha256(o.key.encode()).hexdigest())
    response_status = 202
    response_body = factory.LazyFunction(lambda: {"id": "n1", "status": "accepted"})


class ScheduledItemFactory(factory.django.DjangoModelFactory):
    """A channel send due now."""

    class Meta:
        model = ScheduledItem

    kind = "channel.send"
    key = factory.Sequence(lambda n: f"send:{n}")
    due_at = factory.LazyFunction(timezone.now)
    lane = "hooks.example.com"
    payload = factory.Sequence(lambda n: {"channel_delivery": n})


class BrokerTopicFactory(factory.django.DjangoModelFactory):
    """A topic id a relay has seen."""

    class Meta:
        model = BrokerTopic

    name = factory.Sequence(lambda n: f"topic-{n}")
    topic_id = factory.Faker("uuid4")
