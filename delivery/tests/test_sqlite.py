"""The development default (SQLite, no DATABASE_URL) runs the same delivery code through its portable paths."""

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

SCRIPT = """
from django.utils import timezone
from campaigns.models import Campaign
from delivery.messages import NotificationTask
from delivery.models import Delivery
from delivery.services import deliveries_settle
from inbox.models import Notification, Recipient

now = timezone.now().isoformat()
campaign = Campaign.objects.create(title="t", body="b", segment={"type": "ALL_USERS"}, status="dispatched", targeted=2)
Recipient.objects.create(external_id="c1")
tasks = [NotificationTask(notification_id=f"u{i}", recipient=f"user{i % 3}", kind="like", sender="s",
                          message=f"m{i}", data={"i": i}, created_at=now) for i in range(600)]
tasks += [NotificationTask(notification_id=f"{campaign.id}:c1", recipient="c1", campaign_id=campaign.id),
          NotificationTask(notification_id=f"{campaign.id}:gone", recipient="gone", campaign_id=campaign.id)]
first = deliveries_settle(tasks=tasks)
again = deliveries_settle(tasks=tasks)
campaign.refresh_from_db()
print(first.delivered, first.skipped, again.delivered, again.duplicates, Notification.objects.count(),
      Delivery.objects.count(), Recipient.objects.count(), campaign.status, campaign.delivered, campaign.skipped,
      Notification.objects.get(notification_id="u5").data)
"""


def test_worker_batch_on_sqlite(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.sqlite3'}", "ENV_FILE": "/dev/null"}
    env.setdefault("SECRET_KEY", "a-long-enough-secret-key")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True, timeout=120)

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SCRIPT], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "601 1 0 602 601 602 4 completed 1 1 {'i': 5}"
