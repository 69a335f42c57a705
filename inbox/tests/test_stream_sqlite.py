"""SQLite (run-all.sh's default) has no NOTIFY: the stream server polls, and a read-state change made
through any API process still reaches every open tab as a `sync` state event with the unread count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import urllib3
from django.conf import settings

from conftest import wait_until
from core.devbroker import free_port, port_open
from core.processes import BASE_DIR, ProcessGroup
from core.sse_client import StreamReader

pytestmark = pytest.mark.pipeline

SETUP = """
from inbox.authentication import recipient_token_issue
from inbox.factories import NotificationFactory, RecipientFactory
bob = RecipientFactory(external_id="bob")
ids = [NotificationFactory(recipient=bob).notification_id for _ in range(2)]
print(recipient_token_issue(recipient_id="bob")[0], *ids)
"""


@pytest.fixture
def sqlite_env(tmp_path) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "notifications_project.settings", "SECRET_KEY": settings.SECRET_KEY,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "SSE_HEARTBEAT_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=BASE_DIR, timeout=300)
    return env


def test_read_state_reaches_every_tab_on_sqlite(sqlite_env, tmp_path):
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    made = subprocess.run([*manage, "shell", "-v0", "-c", SETUP], env=sqlite_env, check=True, cwd=BASE_DIR,
                          capture_output=True, text=True, timeout=120)
    token, first, _ = made.stdout.split()
    processes = ProcessGroup(sqlite_env, tmp_path)
    try:
        port = free_port()
        processes.start_program("uvicorn", [sys.executable, "-m", "uvicorn", "notifications_project.asgi:application",
                                            "--port", str(port), "--log-level", "warning"])
        wait_until(lambda: port_open("127.0.0.1", port), timeout=30, what="uvicorn")
        server = f"http://127.0.0.1:{port}"
        tabs = [StreamReader(f"{server}/api/v1/recipients/bob/notifications/stream/?access_token={token}", {})
                for _ in range(2)]
        for tab in tabs:
            wait_until(lambda tab=tab: tab.directives, what="the stream's first message")
        http = urllib3.PoolManager()
        auth = {"Authorization": f"Bearer {token}"}
        wait_until(lambda: http.request("GET", f"{server}/api/v1/recipients/bob/notifications/unread-count/",
                                        headers=auth).status == 200, what="the API")
        inbox = f"{server}/api/v1/recipients/bob/notifications/"

        def states(tab):
            return [json.loads(e["data"]) for e in tab.events if e.get("event") == "state"]

        assert http.request("POST", f"{inbox}{first}/read/", headers=auth).status == 200
        for tab in tabs:
            wait_until(lambda tab=tab: {"action": "sync", "unread_count": 1} in states(tab), timeout=10,
                       what="a sync state event with the new count on each tab")
        assert http.request("POST", f"{inbox}read-all/", headers=auth).status == 200
        for tab in tabs:
            wait_until(lambda tab=tab: states(tab)[-1:] == [{"action": "sync", "unread_count": 0}], timeout=10,
                       what="the count after read-all on each tab")
            tab.close()
    finally:
        processes.stop_all()
