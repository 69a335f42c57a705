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
