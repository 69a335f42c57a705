"""The first URLs a newcomer opens lead somewhere: `/`, the API root, the docs without a login, and
the staff-only demo page of the drop-in inbox."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from notifications_project.pages import api_routes


@pytest.fixture
def staff_client(db) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create(username="staff", is_staff=True))
    return client


def test_the_root_links_to_the_docs_the_admin_and_the_demo_inbox(client, db):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for link in ('href="/api/docs/"', 'href="/admin/"', 'href="/demo/inbox/?recipient=1"', 'href="/api/v1/"'):
        assert link in page


def test_the_api_root_lists_every_route_to_anyone(client, db, service_client):
    for caller in (client, service_client):
        response = caller.get("/api/v1/", HTTP_ACCEPT="application/json")
        assert response.status_code == 200
        body = response.json()
        assert "/api/v1/notifications/" in body["routes"]
        assert "/api/v1/recipients/{recipient_id}/notifications/stream/" in body["routes"]
        assert "/api/v1/campaigns/{id}/cancel/" in body["routes"] or any("cancel" in r for r in body["routes"])
        assert body["docs"].endswith("/api/docs/")
    assert client.post("/api/v1/").status_code == 405  # a GET-only route, not the JSON 404 of unknown routes


def test_api_routes_are_built_from_the_url_configuration():
    routes = api_routes()
    assert len(routes) == len(set(routes)) and all(r.startswith("/api/v1/") for r in routes)
    assert not any("<" in r or "(?P" in r or "format" in r for r in routes)


def test_the_docs_without_a_login_say_where_to_log_in(client, db):
    browser = client.get("/api/docs/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert browser.status_code == 302
    assert browser["Location"] == "/admin/login/?next=%2Fapi%2Fdocs%2F"
    script = client.get("/api/docs/", HTTP_ACCEPT="*/*")  # curl
    assert script.status_code == 401
    assert "/admin/login/" in script.json()["detail"] and "Authorization: Token" in script.json()["detail"]
    assert client.get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 401


def test_the_docs_answer_staff_and_services(staff_client, service_client):
    assert staff_client.get("/api/docs/").status_code == 200
    assert service_client.get("/api/schema/").status_code == 200


def test_the_demo_inbox_is_for_staff_only(client, db, service_client):
    response = client.get("/demo/inbox/?recipient=1")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert service_client.get("/demo/inbox/?recipient=1").status_code == 302  # a service token is no login


def test_the_demo_inbox_embeds_the_element_with_a_recipient_token(staff_client, settings):
    settings.STREAM_URL = "http://localhost:8082"
    page = staff_client.get("/demo/inbox/?recipient=42").content.decode()
    assert "<notification-inbox" in page and 'recipient="42"' in page
    assert 'stream-url="http://localhost:8082/api/v1"' in page and 'api-url="http://testserver/api/v1"' in page
    assert "/static/inbox/notification-inbox.js" in page
    token = page.split(' token="', 1)[1].split('"', 1)[0]
    answer = Client().get("/api/v1/recipients/42/notifications/unread-count/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 200 and answer.json() == {"count": 0, "capped": False}


@pytest.mark.parametrize("recipient", ["a b", "a/b", "x" * 129, "a\x00b"])
def test_the_demo_inbox_refuses_an_id_the_api_would(staff_client, recipient):
    response = staff_client.get("/demo/inbox/", {"recipient": recipient})
    assert response.status_code == 400
    assert "<notification-inbox" not in response.content.decode()


def test_the_demo_inbox_without_a_recipient_asks_for_one(staff_client):
    response = staff_client.get("/demo/inbox/")
    assert response.status_code == 200 and 'name="recipient"' in response.content.decode()


def test_the_inbox_script_is_served_as_a_static_file(client):
    from django.contrib.staticfiles import finders

    path = finders.find("inbox/notification-inbox.js")
    assert path is not None
    source = open(path, encoding="utf-8").read()
    assert 'customElements.define("notification-inbox"' in source
    assert "import " not in source.split("*/", 1)[1]  # no dependencies
