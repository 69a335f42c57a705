"""The development default (SQLite, no DATABASE_URL) runs the same delivery code through its portable paths."""

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

SCRIPT = """
from django.utils import timezone
from campaigns.models import Campaign
from core.messages import NotificationTask
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


def test_on_sqlite_only_the_worker_relays_and_a_notification_is_delivered(kafka, tmp_path):
    """One machine, one SQLite file: the worker relays the outbox, the dispatcher does not (no lock there)."""
    import sqlite3

    from conftest import wait_until
    from core.processes import ProcessGroup

    database = tmp_path / "dev.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ENV_FILE": "/dev/null",
           "KAFKA_BOOTSTRAP_SERVERS": ",".join(kafka.KAFKA_BOOTSTRAP_SERVERS), "KAFKA_TOPIC_PREFIX": kafka.KAFKA_TOPIC_PREFIX,
           "PYTHONUNBUFFERED": "1"}
    env.setdefault("SECRET_KEY", "a-long-enough-secret-key")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True, timeout=120)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", (
        "from inbox.services import notification_send; "
        "notification_send(sender='2', recipient='1', kind='follow', message='hello', data={})")],
        cwd=BASE_DIR, env=env, check=True, timeout=120)
    processes = ProcessGroup(env, tmp_path)
    try:
        processes.start("run_worker")
        processes.start("run_dispatcher")

        def delivered() -> int:
            with sqlite3.connect(database, timeout=5) as db:
                return db.execute("SELECT count(*) FROM inbox_notification").fetchone()[0]

        wait_until(delivered, timeout=60, what="the notification delivered")
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop_all()
    worker_log, dispatcher_log = (path.read_text() for path, _ in processes.processes)
    assert "relay: publishing the outbox" in worker_log
    assert "relay:" not in dispatcher_log
