"""CORS: a product's web app on another origin calls the routes a recipient token reaches (inbox,
read state, unread count, preferences, stream), and nothing else."""

import json

import pytest
from django.test import Client

from inbox.authentication import recipient_token_issue
from inbox.factories import NotificationFactory, RecipientFactory

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
INBOX = "/api/v1/recipients/bob/notifications/"


@pytest.fixture
def bob(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    return NotificationFactory(recipient=RecipientFactory(external_id="bob"))


def _routes(notification):
    return [
        ("GET", INBOX),
        ("GET", f"{INBOX}unread-count/"),
        ("POST", f"{INBOX}{notification.notification_id}/read/"),
        ("POST", f"{INBOX}{notification.notification_id}/archive/"),
        ("POST", f"{INBOX}read-all/"),
        ("GET", "/api/v1/recipients/bob/preferences/"),
        ("PUT", "/api/v1/recipients/bob/preferences/"),
        ("GET", f"{INBOX}stream/"),
    ]


def _preflight(path: str, method: str, origin: str = APP):
    return Client().options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                           "Access-Control-Request-Headers": "authorization, content-type, last-event-id"})


def test_preflight_allows_the_recipient_routes_from_the_allowed_origin(bob):
    for method, path in _routes(bob):
        response = _preflight(path, method)

        assert response.status_code == 200, path
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert method in response.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "last-event-id"} <= allowed
        assert "Access-Control-Allow-Credentials" not in response.headers  # bearer tokens, no cookies


def test_the_actual_requests_carry_the_cors_headers(bob):
    token = recipient_token_issue(recipient_id="bob")[0]
    for method, path in _routes(bob):
        if path.endswith("stream/"):
            continue  # served under ASGI: the sync test client gets the 421 (below)
        body = {"kinds": {"like": False}} if method == "PUT" else {}
        response = Client().generic(method, path, data=json.dumps(body), content_type="application/json",
                                    headers={"Origin": APP, "Authorization": f"Bearer {token}"})

        assert response.status_code == 200, (path, response.content)
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"


def test_errors_on_those_routes_are_readable_by_the_app_too(bob):
    stream = Client().get(f"{INBOX}stream/", headers={"Origin": APP})
    unauthenticated = Client().get(INBOX, headers={"Origin": APP})

    assert stream.status_code == 421 and stream.headers["Access-Control-Allow-Origin"] == APP
    assert unauthenticated.status_code == 401 and unauthenticated.headers["Access-Control-Allow-Origin"] == APP


def test_another_origin_gets_no_cors_headers(bob):
    preflight = _preflight(INBOX, "GET", origin="https://evil.example.com")
    actual = Client().get(INBOX, headers={"Origin": "https://evil.example.com"})

    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Origin" not in actual.headers


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/v1/notifications/"),
    ("POST", "/api/v1/recipients/bob/tokens/"),
    ("DELETE", "/api/v1/recipients/bob/tokens/"),
    ("GET", "/api/v1/recipients/"),
    ("GET", "/api/v1/recipients/bob/"),
    ("POST", "/api/v1/campaigns/"),
    ("GET", "/notifications/bob"),
    ("GET", "/admin/"),
])
def test_routes_outside_a_recipients_own_are_not_opened_to_other_origins(bob, method, path):
    preflight = _preflight(path, method)
    actual = Client().generic(method, path, headers={"Origin": APP})

    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Origin" not in actual.headers


def test_no_origin_is_allowed_by_default(bob, settings):
    settings.CORS_ALLOWED_ORIGINS = []

    assert "Access-Control-Allow-Origin" not in _preflight(INBOX, "GET").headers


@pytest.mark.parametrize(("variable", "value"), [
    ("CORS_ALLOWED_ORIGINS", "app.example.com"),
    ("CORS_ALLOWED_ORIGINS", "https://app.example.com/inbox"),
    ("STREAM_URL", "stream.example.com"),
    ("SSE_MAX_STREAMS_PER_RECIPIENT", "0"),
    ("SSE_MAX_STREAMS_PER_PROCESS", "many"),
])
def test_malformed_stream_and_cors_settings_stop_with_one_line_naming_them(variable, value):
    from core.testing import manage_check

    result = manage_check(SECRET_KEY="a-long-enough-secret-key", **{variable: value})

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
