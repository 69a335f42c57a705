"""The live stream (SSE under uvicorn) receives what the real worker delivers, and resumes."""

import sys

import pytest
import urllib3

from conftest import wait_until
from core.devbroker import free_port, port_open
from core.sse_client import StreamReader
from inbox.authentication import recipient_token_issue

pytestmark = pytest.mark.pipeline


@pytest.fixture
def stream_server(stack):
    port = free_port()
    stack.start_program("uvicorn", [sys.executable, "-m", "uvicorn", "notifications_project.asgi:application",
                                    "--port", str(port), "--log-level", "warning"], env={"SSE_HEARTBEAT_SECONDS": "1"})
    wait_until(lambda: port_open("127.0.0.1", port), what="the stream server")
    return f"http://127.0.0.1:{port}"


def _send(client, message: str) -> str:
    body = {"sender": "s", "recipient": "live", "kind": "like", "message": message}
    return client.post("/api/v1/notifications/", body, format="json").json()["id"]


def test_the_stream_receives_deliveries_and_resumes_with_last_event_id(stack, stream_server, service_client):
    stack.start("run_relay")
    stack.start("run_worker")
    token = recipient_token_issue(recipient_id="live")[0]
    url = f"{stream_server}/api/v1/recipients/live/notifications/stream/"

    stream = StreamReader(url, {"Authorization": f"Bearer {token}"})
    assert stream.status == 200
    wait_until(lambda: stream.comments, what="the first heartbeat")  # subscribed
    first = _send(service_client, "first")
    wait_until(lambda: stream.events, what="the first event")
    stream.close()
    [event] = stream.events
    assert event["event"] == "notification" and f'"id":"{first}"' in event["data"]

    missed = [_send(service_client, f"missed {i}") for i in range(2)]
    wait_until(lambda: service_client.get("/notifications/live").json()["results"][0]["id"] == missed[-1], what="delivery")
    resumed = StreamReader(f"{url}?access_token={token}", {"Last-Event-ID": event["id"]})
    wait_until(lambda: len(resumed.events) == 2, what="the missed events")
    resumed.close()
    assert [e["data"].split('"id":"')[1].split('"')[0] for e in resumed.events] == missed
    assert int(resumed.events[0]["id"]) > int(event["id"])


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Bearer not-a-token"}, 401),
])
def test_the_stream_refuses_strangers(stream_server, headers, status):
    response = urllib3.PoolManager().request("GET", f"{stream_server}/api/v1/recipients/live/notifications/stream/",
                                             headers=headers)
    assert response.status == status


def test_another_recipients_stream_is_404(stream_server):
    token = recipient_token_issue(recipient_id="someone-else")[0]

    for url in (f"/api/v1/recipients/live/notifications/stream/?access_token={token}",
                "/api/v1/recipients/live/notifications/stream/"):
        response = urllib3.PoolManager().request("GET", stream_server + url, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 404
