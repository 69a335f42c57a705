"""Subscriptions: recipients subscribed to a key (the API's topics, `/api/v1/topics/<key>/subscribers/`).

A notification or a campaign sent to a key goes to its subscribers through the dispatcher, as a
campaign to a segment does (campaigns.segments: {"type": "TOPIC", "key": ...}).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.db import bulk_insert, values_for_keys
from inbox.models import Recipient, Subscription

SUBSCRIBERS_PER_REQUEST_MAX = 10_000


def subscribers_add(*, key: str, recipients: Sequence[str]) -> int:
    """Subscribe recipients (by user id) to `key`, creating the unknown ones in the directory.
    Returns how many were not subscribed yet."""
    ids = sorted(set(recipients))  # sorted: concurrent calls lock rows in the same order
    now = timezone.now()
    with transaction.atomic():
        bulk_insert(model=Recipient, columns=("external_id", "email", "push_endpoint", "locale", "attributes",
                                              "created_at", "updated_at"),
                    rows=[(i, "", "", "", {}, now, now) for i in ids], ignore_conflicts_on="external_id")
        pks = sorted(pk for pk, in values_for_keys(model=Recipient, key="external_id", keys=ids, columns=("id",)))
        added = bulk_insert(model=Subscription, columns=("key", "recipient", "created_at"),
                            rows=[(key, pk, now) for pk in pks], ignore_conflicts_on=("key", "recipient"),
                            returning="id")
    return len(added)


def subscribers_remove(*, key: str, recipients: Sequence[str]) -> int:
    """Unsubscribe recipients (by user id) from `key`; unknown ones are ignored. Returns how many were removed."""
    removed, _ = Subscription.objects.filter(key=key, recipient__external_id__in=set(recipients)).delete()
    return removed


def subscribers_of(*, key: str) -> QuerySet[Subscription]:
    """A key's subscriptions, with their recipients (for the API's cursor pages, newest first)."""
    return Subscription.objects.filter(key=key).select_related("recipient")


def subscriptions_of(*, recipient_external_id: str) -> QuerySet[Subscription]:
    """A recipient's subscriptions (an unknown recipient has none)."""
    return Subscription.objects.filter(recipient__external_id=recipient_external_id)


def recipients_subscribed(*, key: str) -> QuerySet[Recipient]:
    """The recipients subscribed to `key` (a campaign segment's audience)."""
    return Recipient.objects.filter(subscriptions__key=key)
