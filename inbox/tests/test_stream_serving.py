"""Where streams are served, and what they cost: real gunicorn, uvicorn and `manage.py runserver`
processes against the test database. Connection counts come from pg_stat_activity."""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

import pytest
import urllib3
from django.db import connection
from rest_framework.test import APIClient

from conftest import wait_until
from core.devbroker import free_port, port_open
from core.processes import BASE_DIR
from core.sse_client import StreamReader
from inbox.authentication import recipient_token_issue
from inbox.factories import NotificationFactory, RecipientFactory

pytestmark = pytest.mark.pipeline

STREAM = "/api/v1/recipients/{}/notifications/stream/"
http = urllib3.PoolManager(maxsize=16, timeout=urllib3.Timeout(connect=5, read=30))


def _serve(stack, name: str, argv: list[str], port: int, env: dict | None = None) -> str:
    stack.start_program(name, argv, env={"SSE_HEARTBEAT_SECONDS": "1", **(env or {})})
    wait_until(lambda: port_open("127.0.0.1", port), timeout=30, what=f"{name} on port {port}")
    return f"http://127.0.0.1:{port}"


def uvicorn(stack, env: dict | None = None) -> str:
    port = free_port()
    return _serve(stack, "uvicorn", [sys.executable, "-m", "uvicorn", "notifications_project.asgi:application",
                                     "--port", str(port), "--log-level", "warning"], port, env)


def gunicorn(stack, env: dict | None = None) -> str:
    port = free_port()
    return _serve(stack, "gunicorn", [sys.executable, "-m", "gunicorn", "notifications_project.wsgi", "--bind",
                                      f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"], port, env)


def runserver(stack) -> str:
    port = free_port()
    return _serve(stack, "runserver", [sys.executable, str(BASE_DIR / "manage.py"), "runserver", "--noreload",
                                       f"127.0.0.1:{port}"], port)


def database_connections() -> int:
    """Sessions open on the test database (this test's own included)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def steady_connections() -> int:
    """The count once it has not changed for half a second (polled, with a deadline)."""
    readings: list[int] = []

    def steady():
        readings.append(database_connections())
        return len(readings) >= 10 and len(set(readings[-10:])) == 1

    wait_until(steady, interval=0.05, what="a steady connection count")
    return readings[-1]


def _open(server: str, recipient: str, token: str, headers: dict | None = None) -> StreamReader:
    stream = StreamReader(f"{server}{STREAM.format(recipient)}?access_token={token}", headers or {})
    assert stream.status == 200
    wait_until(lambda: stream.directives, what="the stream's first message (subscribed)")
    return stream


def _millis(method: str, url: str, **kwargs) -> float:
    started = time.perf_counter()
    response = http.request(method, url, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status in (200, 202), response.data[:300]
    return elapsed


@pytest.fixture
def service_token(service_client) -> str:
    return service_client._credentials["HTTP_AUTHORIZATION"].split()[1]


def test_a_sync_server_answers_the_stream_route_at_once_naming_the_stream_server(stack):
    api = gunicorn(stack, env={"STREAM_URL": "https://stream.example.com/"})
    token = recipient_token_issue(recipient_id="bob")[0]
    _millis("GET", f"{api}/healthz")  # the worker's first request loads the URLs and views

    started = time.perf_counter()
    response = http.request("GET", f"{api}{STREAM.format('bob')}?access_token={token}")

    assert time.perf_counter() - started < 2
    assert response.status == 421
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["stream_url"] == "https://stream.example.com/api/v1/recipients/bob/notifications/stream/"
    assert "https://stream.example.com" in response.json()["detail"]
    assert token not in response.data.decode()  # the access token is not echoed


def test_streams_on_the_sync_server_never_hold_its_workers(stack, service_token):
    """10 stream clients on gunicorn (2 sync workers, as run-all.sh), each reconnecting every 0.1 s
    (30 times EventSource's pace): every stream request is answered at once, and /healthz and a POST
    stay under 50 ms meanwhile."""
    api = gunicorn(stack)
    token = recipient_token_issue(recipient_id="bob")[0]
    headers = {"Authorization": f"Token {service_token}", "Content-Type": "application/json"}
    body = b'{"sender": "a", "recipient": "bob", "kind": "like", "message": "hi"}'
    for _ in range(4):  # warm both workers (imports, database connections)
        _millis("POST", f"{api}/api/v1/notifications/", headers=headers, body=body)
    stop, stream_answers, stream_millis = threading.Event(), [], []

    def stream_client():
        client = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=60))
        while not stop.is_set():
            started = time.perf_counter()
            stream_answers.append(client.request("GET", f"{api}{STREAM.format('bob')}?access_token={token}").status)
            stream_millis.append((time.perf_counter() - started) * 1000)
            stop.wait(0.1)  # the client's reconnection pace, not a wait for an effect

    clients = [threading.Thread(target=stream_client, daemon=True) for _ in range(10)]
    for client in clients:
        client.start()
    wait_until(lambda: len(stream_answers) >= 20, what="the stream clients' first answers")
    healthz, posts = [], []
    for _ in range(20):
        healthz.append(_millis("GET", f"{api}/healthz"))
        posts.append(_millis("POST", f"{api}/api/v1/notifications/", headers=headers, body=body))
    stop.set()
    for client in clients:
        client.join(timeout=30)

    print(f"10 stream clients, {len(stream_answers)} stream answers (median {statistics.median(stream_millis):.1f} ms, "
          f"max {max(stream_millis):.1f}): healthz median {statistics.median(healthz):.1f} max {max(healthz):.1f} ms; "
          f"POST median {statistics.median(posts):.1f} max {max(posts):.1f} ms")
    assert set(stream_answers) == {421}
    assert max(stream_millis) < 1000  # never held
    assert statistics.median(healthz) < 50 and statistics.median(posts) < 50
    assert max(healthz) < 1000 and max(posts) < 1000  # a held worker costs seconds; single spikes are the machine's


def test_a_waiting_stream_holds_no_database_connection(stack):
    """uvicorn: 50 streams open at once, then 100 open/close cycles; the server's connections stay at
    its baseline (the broadcaster's own two, counted after one warm-up stream)."""
    server = uvicorn(stack)
    tokens = {f"u{i}": recipient_token_issue(recipient_id=f"u{i}")[0] for i in range(50)}
    before = steady_connections()
    _open(server, "u0", tokens["u0"]).close()
    baseline = steady_connections()
    assert baseline == before + 2  # the broadcaster's LISTEN and query connections, nothing per stream

    streams = [_open(server, recipient, token) for recipient, token in tokens.items()]
    while_open = database_connections()
    for stream in streams:
        stream.close()
    for i in range(100):
        _open(server, f"u{i % 50}", tokens[f"u{i % 50}"]).close()

    print(f"connections: {before} before the server, {baseline} after its first stream, {while_open} with 50 open")
    assert while_open <= baseline, f"{while_open} connections with 50 streams open, baseline {baseline}"
    wait_until(lambda: database_connections() <= baseline, what=f"the baseline of {baseline} connections")
    assert _millis("GET", f"{server}/healthz") < 1000  # still serving


def test_streams_are_bounded_per_recipient_and_the_oldest_makes_room(stack):
    server = uvicorn(stack, env={"SSE_MAX_STREAMS_PER_RECIPIENT": "2"})
    bob = RecipientFactory(external_id="bob")
    token = recipient_token_issue(recipient_id="bob")[0]
    tabs = [_open(server, "bob", token) for _ in range(2)]

    third = _open(server, "bob", token)

    assert tabs[0].ended.wait(10)
    [closed] = tabs[0].events
    assert closed["event"] == "close" and closed["data"] == '{"reason":"replaced"}'
    assert int(closed["retry"]) >= 10_000  # it comes back later, not at once
    notification = NotificationFactory(recipient=bob)
    for stream in (tabs[1], third):
        wait_until(lambda stream=stream: stream.events, what="the live notification on the newer tabs")
        assert notification.notification_id in stream.events[0]["data"]
    # The replaced tab's EventSource reconnects with its Last-Event-ID: served, nothing lost.
    again = _open(server, "bob", token, {"Last-Event-ID": "0"})
    wait_until(lambda: again.events, what="what the replaced tab missed")
    assert notification.notification_id in again.events[0]["data"]
    for stream in (tabs[1], third, again):
        stream.close()


def test_streams_are_bounded_per_process(stack):
    """A full process makes room with the newcomer's own oldest stream, else with its oldest."""
    server = uvicorn(stack, env={"SSE_MAX_STREAMS_PER_PROCESS": "2"})
    tokens = {r: recipient_token_issue(recipient_id=r)[0] for r in ("a", "b", "c")}
    a, b = _open(server, "a", tokens["a"]), _open(server, "b", tokens["b"])

    a_again = _open(server, "a", tokens["a"])
    assert a.ended.wait(10)
    assert a.events[-1]["event"] == "close" and a.events[-1]["data"] == '{"reason":"replaced"}'
    c = _open(server, "c", tokens["c"])
    assert b.ended.wait(10)
    assert b.events[-1]["event"] == "close" and b.events[-1]["data"] == '{"reason":"busy"}'

    assert not a_again.ended.is_set() and not c.ended.is_set()
    a_again.close()
    c.close()


def test_revoking_tokens_and_deleting_the_recipient_close_its_streams(stack, service_client, service_token):
    server = uvicorn(stack)
    RecipientFactory(external_id="bob")
    token = recipient_token_issue(recipient_id="bob")[0]
    with_token = _open(server, "bob", token)
    by_service = StreamReader(f"{server}{STREAM.format('bob')}", {"Authorization": f"Token {service_token}"})
    wait_until(lambda: by_service.directives, what="the service's stream")

    started = time.monotonic()
    assert service_client.delete("/api/v1/recipients/bob/tokens/").status_code == 204

    assert with_token.ended.wait(10)
    revoked_after = time.monotonic() - started
    assert with_token.events[-1]["event"] == "close" and with_token.events[-1]["data"] == '{"reason":"revoked"}'
    assert revoked_after < 2, f"closed after {revoked_after:.1f} s: the NOTIFY, not the periodic check"
    assert not by_service.ended.is_set()  # a service's stream does not depend on recipient tokens
    reconnect = http.request("GET", f"{server}{STREAM.format('bob')}?access_token={token}")
    assert reconnect.status == 401  # so the browser's EventSource stops

    assert service_client.delete("/api/v1/recipients/bob/").status_code == 204
    assert by_service.ended.wait(10)
    assert by_service.events[-1]["data"] == '{"reason":"deleted"}'


@pytest.mark.parametrize(("path", "headers"), [
    (STREAM.format("bob"), {"Last-Event-ID": "²"}),
    (STREAM.format("bob"), {"Last-Event-ID": "9" * 5000}),
    (STREAM.format("bob"), {"Last-Event-ID": "-1"}),
    (STREAM.format("bob") + "?last_event_id=99999999999999999999", {}),
    (STREAM.format("b%00b"), {}),
    (STREAM.format("x" * 129), {}),
])
def test_bad_stream_requests_are_400(stack, service_token, path, headers):
    server = uvicorn(stack)

    response = http.request("GET", server + path, headers={"Authorization": f"Token {service_token}", **headers})

    assert response.status == 400, response.data[:200]
    assert response.headers["Content-Type"] == "application/json"


def test_runserver_serves_streams_without_leaking_connections(stack, service_token):
    """`manage.py runserver` (daphne's, ASGI): streams work, and neither requests nor streams leave
    connections behind."""
    server = runserver(stack)
    bob = RecipientFactory(external_id="bob")
    token = recipient_token_issue(recipient_id="bob")[0]
    auth = {"Authorization": f"Token {service_token}"}
    _open(server, "bob", token).close()
    _millis("GET", f"{server}/api/v1/recipients/bob/notifications/", headers=auth)
    baseline = steady_connections()

    stream = _open(server, "bob", token)
    notification = NotificationFactory(recipient=bob)
    wait_until(lambda: stream.events, what="the live notification through runserver")
    stream.close()
    for _ in range(30):
        _millis("GET", f"{server}/api/v1/recipients/bob/notifications/", headers=auth)
        _open(server, "bob", token).close()

    assert notification.notification_id in stream.events[0]["data"]
    wait_until(lambda: database_connections() <= baseline, what=f"the baseline of {baseline} connections")


def test_read_state_changes_reach_every_open_tab_with_the_unread_count(stack):
    server = uvicorn(stack)
    bob = RecipientFactory(external_id="bob")
    token = recipient_token_issue(recipient_id="bob")[0]
    tabs = [_open(server, "bob", token) for _ in range(2)]
    ids = [NotificationFactory(recipient=bob).notification_id for _ in range(3)]
    for tab in tabs:
        wait_until(lambda tab=tab: len(tab.events) == 3, what="the three notifications on each tab")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    inbox = "/api/v1/recipients/bob/notifications/"

    assert client.post(f"{inbox}{ids[0]}/read/").status_code == 200
    assert client.post(f"{inbox}{ids[0]}/read/").status_code == 200  # no change: no event
    assert client.post(f"{inbox}{ids[1]}/archive/").status_code == 200
    assert client.post(f"{inbox}read-all/", {}, format="json").json() == {"marked": 2}  # the archived one too
    assert client.post(f"{inbox}{ids[2]}/unread/").status_code == 200

    expected = [
        {"action": "read", "ids": [ids[0]], "unread_count": 2},
        {"action": "archive", "ids": [ids[1]], "unread_count": 1},
        {"action": "read-all", "up_to": None, "unread_count": 0},
        {"action": "unread", "ids": [ids[2]], "unread_count": 1},
    ]
    for tab in tabs:
        wait_until(lambda tab=tab: len(tab.events) == 7, what="four state events on each tab")
        states = tab.events[3:]
        assert {e["event"] for e in states} == {"state"} and not any("id" in e for e in states)
        received = [json.loads(e["data"]) for e in states]
        # Each event carries the count as it is when the event is sent: changes that follow each other
        # closely may all show the latest; the last one always shows where the inbox ended.
        assert [{k: v for k, v in e.items() if k != "unread_count"} for e in received] == [
            {k: v for k, v in e.items() if k != "unread_count"} for e in expected]
        assert received[-1]["unread_count"] == 1
        tab.close()
