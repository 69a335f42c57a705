"""Settling a batch of notification tasks: the worker's whole database side, in one transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns import services as campaign_services
from campaigns.models import CampaignStatus
from delivery.messages import NotificationTask
from delivery.models import Delivery, DeliveryOutcome
from inbox import services as inbox_services
from notifications_project.db import bulk_insert

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

        inbox_rows: list[tuple] = []
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
            if campaign:
                content = (campaign.kind, "", campaign.title, campaign.body, campaign.data, campaign.id, campaign.created_at)
            else:
                content = (task.kind, task.sender, "", task.message, task.data, None, datetime.fromisoformat(task.created_at))
            inbox_rows.append((task.notification_id, recipient_pks[task.recipient], *content, now))
        inbox_services.notifications_insert(rows=inbox_rows)
        for campaign_id, counts in progress.items():
            campaign_services.campaign_progress_add(
                campaign_id=campaign_id,
                delivered=counts[DeliveryOutcome.DELIVERED],
                skipped=counts[DeliveryOutcome.SKIPPED],
                failed=counts[DeliveryOutcome.FAILED],
            )
    return result


def _ledger_claim(*, tasks: Sequence[NotificationTask], outcomes: dict[str, tuple[str, str]], settled_at) -> set[str]:
    """Insert ledger rows; returns the ids this call inserted. The primary key arbitrates: a row
    already there (or being inserted by a concurrent transaction, which we then wait for) is not ours.
    """
    rows = [(t.notification_id, t.recipient, t.campaign_id, *outcomes[t.notification_id], settled_at) for t in tasks]
    inserted = bulk_insert(
        model=Delivery,
        columns=("notification_id", "recipient_external_id", "campaign_id", "outcome", "reason", "settled_at"),
        rows=rows,
        ignore_conflicts_on="notification_id",
        returning="notification_id",
    )
    return {row[0] for row in inserted}
