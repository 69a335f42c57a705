from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from delivery import broker
from delivery.messages import NotificationTask
from delivery.outbox import outbox_enqueue
from inbox.models import Recipient


def notification_send(*, sender: str, recipient: str, kind: str, message: str, data: dict) -> NotificationTask:
    """Accept a user-to-user notification: it is queued in the outbox, keyed by recipient, and its
    id is returned at once. The worker writes it into the recipient's inbox."""
    task = NotificationTask(
        notification_id=str(uuid.uuid4()),
        recipient=recipient,
        kind=kind,
        sender=sender,
        message=message,
        data=data,
        created_at=timezone.now().isoformat(),
    )
    with transaction.atomic():
        outbox_enqueue(topic=broker.NOTIFICATIONS_SEND, key=recipient, payload=task.encode())
    return task


def recipients_resolve(*, external_ids: set[str], create: set[str]) -> dict[str, int]:
    """Map product user ids to recipient primary keys, first creating the ones in `create` that are
    unknown. Ids not found and not to be created are absent from the answer."""
    missing_to_create = create - set(
        Recipient.objects.filter(external_id__in=create).values_list("external_id", flat=True)
    )
    if missing_to_create:
        now = timezone.now()
        Recipient.objects.bulk_create(
            [Recipient(external_id=e, created_at=now, updated_at=now) for e in sorted(missing_to_create)],
            ignore_conflicts=True,  # another worker may create the same recipient at the same moment
        )
    return dict(Recipient.objects.filter(external_id__in=external_ids).values_list("external_id", "id"))


RECIPIENT_FIELDS = ("email", "locale", "attributes")


def recipients_upsert(*, recipients: list[dict]) -> tuple[int, int]:
    """Create or update recipients by user id; returns (created, updated). Only the fields a
    recipient's entry carries are written (an entry with just an id and attributes keeps its email)."""
    by_id = {r["id"]: r for r in recipients}  # the last entry for an id wins
    now = timezone.now()
    with transaction.atomic():
        existing = set(Recipient.objects.filter(external_id__in=by_id).values_list("external_id", flat=True))
        groups: dict[tuple[str, ...], list[Recipient]] = {}
        for external_id, entry in by_id.items():
            fields = tuple(f for f in RECIPIENT_FIELDS if f in entry)
            values = {f: entry[f] for f in fields}
            groups.setdefault(fields, []).append(Recipient(external_id=external_id, created_at=now, updated_at=now, **values))
        for fields, rows in groups.items():
            Recipient.objects.bulk_create(
                rows,
                batch_size=1000,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=[*fields, "updated_at"],
            )
    return len(by_id) - len(existing), len(existing)


def recipient_update(*, recipient: Recipient, **fields) -> Recipient:
    for name, value in fields.items():
        setattr(recipient, name, value)
    recipient.save(update_fields=[*fields, "updated_at"])
    return recipient


def recipient_delete(*, recipient: Recipient) -> None:
    """Erase a recipient with its inbox (its queued campaign tasks are then skipped)."""
    recipient.delete()
