"""Settling a batch of notification tasks: the worker's whole database side, in one transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns import services as campaign_services
from campaigns.models import CampaignStatus
from delivery.messages import NotificationTask
from delivery.models import Delivery, DeliveryOutcome
from inbox import services as inbox_services
from inbox.models import Notification

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0


def deliveries_settle(*, tasks: Sequence[NotificationTask]) -> BatchResult:
    """Deliver each task at most once, whatever happened before.

    In one transaction: resolve recipients (user-to-user tasks create theirs; campaign tasks whose
    recipient is gone are skipped), claim each notification id in the ledger, write the inbox rows of
    the claimed ones, and add the batch's counts to their campaigns. A task whose id is already in
    the ledger changes nothing. The caller commits its Kafka offsets only after this returns.
    """
    unique_tasks = list({t.notification_id: t for t in tasks}.values())
    result = BatchResult(duplicates=len(tasks) - len(unique_tasks))
    if not unique_tasks:
        return result
    now = timezone.now()

    with transaction.atomic():
        recipient_pks = inbox_services.recipients_resolve(
            external_ids={t.recipient for t in unique_tasks},
            create={t.recipient for t in unique_tasks if t.campaign_id is None},
        )
        campaigns = campaign_selectors.campaigns_by_id(ids={t.campaign_id for t in unique_tasks if t.campaign_id})

        outcomes: dict[str, tuple[str, str]] = {}
        for task in unique_tasks:
            campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
            if task.campaign_id and campaign is None:
                outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "campaign not found")
            elif campaign is not None and campaign.status == CampaignStatus.CANCELLED:
                outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "campaign cancelled")
            elif task.recipient not in recipient_pks:
                outcomes[task.notification_id] = (DeliveryOutcome.SKIPPED, "recipient deleted")
            else:
                outcomes[task.notification_id] = (DeliveryOutcome.DELIVERED, "")

        claimed = _ledger_claim(tasks=unique_tasks, outcomes=outcomes, settled_at=now)
        result.duplicates += len(unique_tasks) - len(claimed)

        inbox_rows = []
        progress: dict[int, Counter] = {}
        for task in unique_tasks:
            if task.notification_id not in claimed:
                continue
            outcome = outcomes[task.notification_id][0]
            setattr(result, outcome, getattr(result, outcome) + 1)
            if task.campaign_id:
                progress.setdefault(task.campaign_id, Counter())[outcome] += 1
            if outcome != DeliveryOutcome.DELIVERED:
                continue
            campaign = campaigns.get(task.campaign_id) if task.campaign_id else None
            inbox_rows.append(
                Notification(
                    notification_id=task.notification_id,
                    recipient_id=recipient_pks[task.recipient],
                    kind=campaign.kind if campaign else task.kind,
                    sender=task.sender,
                    title=campaign.title if campaign else "",
                    message=campaign.body if campaign else task.message,
                    data=campaign.data if campaign else task.data,
                    campaign_id=task.campaign_id,
                    created_at=campaign.created_at if campaign else task.created_at,
                    delivered_at=now,
                )
            )
        Notification.objects.bulk_create(inbox_rows, batch_size=1000)
        for campaign_id, counts in progress.items():
            campaign_services.campaign_progress_add(
                campaign_id=campaign_id,
                delivered=counts[DeliveryOutcome.DELIVERED],
                skipped=counts[DeliveryOutcome.SKIPPED],
                failed=counts[DeliveryOutcome.FAILED],
            )
    return result


_LEDGER_CHUNK = 1000


def _ledger_claim(*, tasks: Sequence[NotificationTask], outcomes: dict[str, tuple[str, str]], settled_at) -> set[str]:
    """Insert ledger rows; returns the ids this call inserted. The primary key arbitrates: a row
    already there (or being inserted by a concurrent transaction, which we then wait for) is not ours.
    """
    table = Delivery._meta.db_table
    claimed: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(tasks), _LEDGER_CHUNK):
            chunk = tasks[start : start + _LEDGER_CHUNK]
            values_sql = ",".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list = []
            for t in chunk:
                outcome, reason = outcomes[t.notification_id]
                params += [t.notification_id, t.recipient, t.campaign_id, outcome, reason, settled_at]
            cursor.execute(
                f"INSERT INTO {table} (notification_id, recipient_external_id, campaign_id, outcome, reason, settled_at) "
                f"VALUES {values_sql} ON CONFLICT (notification_id) DO NOTHING RETURNING notification_id",
                params,
            )
            claimed.update(row[0] for row in cursor.fetchall())
    return claimed
