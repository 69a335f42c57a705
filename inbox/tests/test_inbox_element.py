"""The drop-in web inbox (<notification-inbox>) in a real browser: Debian's chromium, headless, driven
by Playwright with its executable path (no browser is ever downloaded). The page is the staff demo,
/demo/inbox/?recipient=<id>, served by real gunicorn and uvicorn processes against the test database;
every wait is Playwright's `expect` or `wait_until`, with a deadline."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from urllib.parse import unquote

import pytest
import urllib3
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from conftest import wait_until
from core.devbroker import free_port, port_open
from inbox.factories import NotificationFactory, RecipientFactory
from inbox.models import Notification
from inbox.services import recipient_tokens_revoke

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)"),
]

if CHROMIUM is not None:
    from playwright.sync_api import expect, sync_playwright

http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30))


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()
        connections.close_all()  # the ORM calls made while Playwright's loop runs have connections of their own


class Servers:
    """The API (gunicorn: pages, static files, API) and the stream server (uvicorn), on two origins as in
    production, with CORS for the page's origin."""

    def __init__(self, stack, env: dict | None = None):
        self.stack = stack
        self.api_port, self.stream_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.stream = f"http://127.0.0.1:{self.stream_port}"
        self.env = {"CORS_ALLOWED_ORIGINS": self.api, "STREAM_URL": self.stream, "SSE_HEARTBEAT_SECONDS": "1", **(env or {})}
        self.stack.start_program("gunicorn", [sys.executable, "-m", "gunicorn", "notifications_project.wsgi", "--bind",
                                              f"127.0.0.1:{self.api_port}", "--workers", "2", "--log-level", "warning"],
                                 env=self.env)
        self.stream_process = self.start_stream()
        wait_until(lambda: port_open("127.0.0.1", self.api_port), timeout=30, what="gunicorn")

    def start_stream(self):
        process = self.stack.start_program("uvicorn", [sys.executable, "-m", "uvicorn", "notifications_project.asgi:application",
                                                       "--port", str(self.stream_port), "--log-level", "warning"], env=self.env)
        wait_until(lambda: port_open("127.0.0.1", self.stream_port), timeout=30, what="uvicorn")
        return process


def _staff_page(browser, servers: Servers, recipient: str):
    """A browser tab on the demo page, logged in as staff (the session made here, in the shared database)."""
    client = Client()
    user, _ = get_user_model().objects.get_or_create(username="staff", defaults={"is_staff": True})
    client.force_login(user)
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": servers.api}])
    page = context.new_page()
    page.stream_requests = []
    page.on("request", lambda request: page.stream_requests.append(request.url) if "/stream/" in request.url else None)
    page.goto(f"{servers.api}/demo/inbox/?recipient={recipient}")
    return page


def _service_token(service_client) -> str:
    return service_client._credentials["HTTP_AUTHORIZATION"].split()[1]


def _send(servers: Servers, token: str, recipient: str, message: str) -> None:
    response = http.request("POST", f"{servers.api}/api/v1/notifications/", json={
        "sender": "bob", "recipient": recipient, "kind": "mention", "message": message},
        headers={"Authorization": f"Token {token}"})
    assert response.status == 202, response.data


def test_the_inbox_shows_counts_live_notifications_read_state_and_reconnects(stack, browser, service_client):
    alice = RecipientFactory(external_id="alice")
    NotificationFactory(recipient=alice, message="older one")
    NotificationFactory(recipient=alice, message="newer one")
    token = _service_token(service_client)
    servers = Servers(stack)
    stack.start("run_worker")

    tab = _staff_page(browser, servers, "alice")
    other_tab = _staff_page(browser, servers, "alice")
    inbox = tab.locator("notification-inbox")
    badge, other_badge = inbox.locator(".badge"), other_tab.locator("notification-inbox .badge")
    expect(badge).to_have_text("2", timeout=15_000)  # it loads, and shows the unread count
    expect(inbox.locator(".bell")).to_have_attribute("aria-label", "Notifications, 2 unread")
    expect(other_badge).to_have_text("2", timeout=15_000)

    inbox.locator(".bell").click()
    expect(inbox.locator(".panel")).to_be_visible()
    expect(inbox.locator("article")).to_have_count(2)
    expect(inbox.locator("article").first).to_contain_text("newer one")

    # Sent through the API (outbox, broker, worker), shown without a reload. The first waits for the
    # worker to join its group; the second is timed.
    _send(servers, token, "alice", "first live one")
    expect(inbox.locator("article").first).to_contain_text("first live one", timeout=60_000)
    expect(badge).to_have_text("3")
    started = time.monotonic()
    _send(servers, token, "alice", "second live one")
    expect(inbox.locator("article").first).to_contain_text("second live one", timeout=10_000)
    shown_after = time.monotonic() - started
    expect(badge).to_have_text("4")
    expect(other_badge).to_have_text("4")
    assert shown_after < 1.0, f"a notification took {shown_after:.2f} s from the API's answer to the page"

    # Marking read lowers the count, on this tab at once and on the other through the stream.
    inbox.locator("article").first.get_by_role("button", name="Mark as read").click()
    expect(badge).to_have_text("3")
    expect(other_badge).to_have_text("3", timeout=5_000)

    # The stream server restarts; what was delivered meanwhile is shown once it is back.
    stack.stop(servers.stream_process, signal.SIGKILL)
    _send(servers, token, "alice", "sent while the stream was down")
    wait_until(lambda: Notification.objects.filter(message="sent while the stream was down").exists(), timeout=30,
               what="the worker's delivery")
    servers.stream_process = servers.start_stream()
    expect(inbox.locator("article").first).to_contain_text("sent while the stream was down", timeout=40_000)
    expect(badge).to_have_text("4")
    expect(other_badge).to_have_text("4", timeout=40_000)
    assert any("last_event_id=" in url for url in tab.stream_requests), tab.stream_requests
    assert inbox.locator("article").filter(has_text="sent while the stream was down").count() == 1


def test_the_inbox_pages_marks_archives_and_is_keyboard_accessible(stack, browser):
    carol = RecipientFactory(external_id="carol")
    for n in range(45):
        NotificationFactory(recipient=carol, message=f"notification {n}")
    servers = Servers(stack)
    tab = _staff_page(browser, servers, "carol")
    inbox = tab.locator("notification-inbox")
    badge = inbox.locator(".badge")
    expect(badge).to_have_text("45", timeout=15_000)

    # Keyboard: Enter on the bell opens the panel and focuses the newest item; arrows move; Escape closes.
    bell = inbox.locator(".bell")
    bell.focus()
    tab.keyboard.press("Enter")
    expect(bell).to_have_attribute("aria-expanded", "true")
    articles = inbox.locator("article")
    expect(articles).to_have_count(20)  # the first page
    expect(articles.first).to_be_focused()
    tab.keyboard.press("ArrowDown")
    expect(articles.nth(1)).to_be_focused()
    expect(inbox.locator("[role=feed]")).to_have_attribute("aria-busy", "false")
    expect(articles.first).to_have_attribute("aria-posinset", "1")
    tab.keyboard.press("Escape")
    expect(bell).to_have_attribute("aria-expanded", "false")
    expect(bell).to_be_focused()

    # Cursor pages on scroll.
    bell.click()
    for shown in (40, 45):
        inbox.locator(".list").evaluate("list => list.scrollTop = list.scrollHeight")
        expect(articles).to_have_count(shown, timeout=10_000)
    expect(articles.last).to_contain_text("notification 0")
    expect(articles.last).to_have_attribute("aria-setsize", "45")

    # Archive takes it out of the list and the count; mark all read empties the badge.
    articles.first.get_by_role("button", name="Archive").click()
    expect(articles).to_have_count(44)
    expect(badge).to_have_text("44")
    inbox.get_by_role("button", name="Mark all as read").click()
    expect(badge).to_be_hidden()
    wait_until(lambda: not Notification.objects.filter(recipient=carol).unread().exists(), what="all read on the server")
    tab.reload()
    expect(tab.locator("notification-inbox .badge")).to_be_hidden(timeout=15_000)

    # Replaceable strings and CSS custom properties.
    inbox.evaluate("el => { el.strings = {title: 'Benachrichtigungen', markAllRead: 'Alle gelesen'}; "
                   "el.style.setProperty('--notification-inbox-badge-bg', 'rgb(1, 2, 3)'); }")
    expect(inbox.locator("h2")).to_have_text("Benachrichtigungen")
    assert inbox.locator(".badge").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(1, 2, 3)"


def test_the_inbox_asks_for_a_new_token_before_it_expires_and_resumes_the_stream(stack, browser):
    dave = RecipientFactory(external_id="dave")
    servers = Servers(stack)
    tab = _staff_page(browser, servers, "dave")
    inbox = tab.locator("notification-inbox")
    first_token = inbox.get_attribute("token")
    expect(inbox.locator(".status")).to_have_text("Live", timeout=15_000)  # the stream is open
    NotificationFactory(recipient=dave, message="before the refresh")
    expect(inbox.locator(".badge")).to_have_text("1", timeout=15_000)
    wait_until(lambda: inbox.evaluate("el => el.lastEventId"), what="the notification's stream event")
    # The token (an hour) is now within `refresh-before` of its end: the element asks the page for a new one.
    inbox.evaluate("el => el.setAttribute('refresh-before', '3599')")
    wait_until(lambda: inbox.get_attribute("token") != first_token, timeout=30, what="a new token from the page")
    # Back to asking a minute before the end, so no further token replaces this one while the test looks.
    inbox.evaluate("el => el.setAttribute('refresh-before', '60')")
    new_token = inbox.get_attribute("token")
    wait_until(lambda: any(first_token not in unquote(url) and "last_event_id=" in url for url in tab.stream_requests),
               timeout=30, what="a stream opened with a new token, resuming after the last event")
    assert inbox.get_attribute("token") == new_token
    NotificationFactory(recipient=dave, message="after the refresh")
    expect(inbox.locator(".badge")).to_have_text("2", timeout=15_000)

    # Revoked: the server closes the stream ("revoked"), the element asks for a token, the page gets one.
    tab.evaluate("document.querySelector('notification-inbox').addEventListener('notification-inbox:token-refresh', "
                 "e => (window.refreshReasons = window.refreshReasons || []).push(e.detail.reason))")
    recipient_tokens_revoke(recipient_external_id="dave")
    wait_until(lambda: "revoked" in (tab.evaluate("window.refreshReasons") or []), timeout=30, what="a refresh on revocation")
    wait_until(lambda: inbox.get_attribute("token") != new_token, timeout=30, what="a token after the revocation")
    NotificationFactory(recipient=dave, message="after the revocation")
    expect(inbox.locator(".badge")).to_have_text("3", timeout=15_000)


def test_notification_text_is_shown_as_text_never_run_as_markup(stack, browser):
    erin = RecipientFactory(external_id="erin")
    servers = Servers(stack)
    tab = _staff_page(browser, servers, "erin")
    inbox = tab.locator("notification-inbox")
    expect(inbox.locator(".status")).to_have_text("Live", timeout=15_000)
    hostile = '<img src=x onerror="window.__hacked = 1"><script>window.__hacked = 2</script>'
    NotificationFactory(recipient=erin, title="<b>bold</b>", message=hostile, sender='"><svg onload=alert(1)>')
    expect(inbox.locator(".badge")).to_have_text("1", timeout=15_000)
    inbox.locator(".bell").click()
    article = inbox.locator("article")
    expect(article).to_contain_text(hostile)
    expect(article).to_contain_text("<b>bold</b>")
    assert inbox.locator("article img, article script, article b, article svg").count() == 0
    assert tab.evaluate("window.__hacked") is None
    expect(inbox.locator(".note")).to_be_hidden()  # not "all caught up" beside a notification
    if os.environ.get("INBOX_SCREENSHOT"):
        NotificationFactory(recipient=erin, kind="like", sender="4", message="Negro liked your post: 'My weekend getaway!'")
        expect(inbox.locator(".badge")).to_have_text("2", timeout=15_000)
        tab.screenshot(path=os.environ["INBOX_SCREENSHOT"])
