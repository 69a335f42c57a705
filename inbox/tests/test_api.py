import json
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from core import broker
from core.messages import NotificationTask
from core.models import OutboxEvent
from inbox.factories import NotificationFactory, RecipientFactory

pytestmark = pytest.mark.django_db

VALID = {"sender": "2", "recipient": "1", "kind": "follow", "message": "Tito started following you.", "data": {}}


def _only_outbox_task() -> tuple[OutboxEvent, NotificationTask]:
    [event] = OutboxEvent.objects.all()
    return event, NotificationTask.decode(bytes(event.payload))


def test_send_queues_one_task_keyed_by_recipient(service_client):
    response = service_client.post("/api/v1/notifications/", {**VALID, "data": {"post": 7}}, format="json")

    assert response.status_code == 202
    event, task = _only_outbox_task()
    assert response.json() == {"id": task.notification_id, "status": "accepted"}
    assert (event.topic, event.key) == (broker.NOTIFICATIONS_SEND, "1")
    assert (task.sender, task.recipient, task.kind, task.message, task.data) == (
        "2", "1", "follow", "Tito started following you.", {"post": 7},
    )


@pytest.mark.parametrize("encode", ["form", "json", "multipart"])
def test_seed_send_accepts_form_and_json(service_client, encode):
    body = {"fromID": "2", "toID": "1", "message": "Tito started following you."}
    if encode == "form":  # what curl -d sends
        response = service_client.post("/send", urlencode(body), content_type="application/x-www-form-urlencoded")
    else:
        response = service_client.post("/send", body, format=encode)

    assert response.status_code == 202, response.content
    _, task = _only_outbox_task()
    assert (task.sender, task.recipient, task.kind, task.message) == ("2", "1", "custom", body["message"])


BAD_INPUTS = [
    ({"sender": ""}, "sender"),
    ({"sender": None}, "sender"),
    ({"recipient": ""}, "recipient"),
    ({"recipient": "2"}, "recipient"),  # equal to the sender
    ({"recipient": "a" * 129}, "recipient"),
    ({"sender": "has space"}, "sender"),
    ({"recipient": "a/b"}, "recipient"),
    ({"kind": "poke"}, "kind"),
    ({"message": ""}, "message"),
    ({"message": "x" * 2001}, "message"),
    ({"data": {"blob": "x" * 16400}}, "data"),
    ({"data": [1, 2]}, "data"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUTS)
def test_bad_input_is_400_naming_the_field_and_queues_nothing(service_client, change, field):
    response = service_client.post("/api/v1/notifications/", {**VALID, **change}, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert OutboxEvent.objects.count() == 0


@pytest.mark.parametrize("field", ["sender", "recipient", "kind"])
def test_missing_field_is_400(service_client, field):
    body = {k: v for k, v in VALID.items() if k != field}
    response = service_client.post("/api/v1/notifications/", body, format="json")

    assert response.status_code == 400
    assert response.json()[field] == ["This field is required."]
    assert OutboxEvent.objects.count() == 0


def test_no_message_and_no_default_template_is_400_naming_message(service_client):
    """Without a message the worker renders the kind's template: the kind needs a default one."""
    body = {k: v for k, v in VALID.items() if k != "message"}
    response = service_client.post("/api/v1/notifications/", body, format="json")

    assert response.status_code == 400
    assert "no default in_app template" in response.json()["message"][0]
    assert OutboxEvent.objects.count() == 0


def test_unknown_kind_lists_the_valid_choices(service_client):
    response = service_client.post("/api/v1/notifications/", {**VALID, "kind": "poke"}, format="json")

    assert "follow, mention, like, custom" in response.json()["kind"][0]


@pytest.mark.parametrize("kind", ["follow", "mention", "like", "custom"])
def test_seed_send_takes_an_optional_kind(service_client, kind):
    body = {"fromID": "2", "toID": "1", "message": "Tito started following you.", "kind": kind}
    response = service_client.post("/send", urlencode(body), content_type="application/x-www-form-urlencoded")

    assert response.status_code == 202, response.content
    assert _only_outbox_task()[1].kind == kind


@pytest.mark.parametrize("kind", ["poke", "offer", "FOLLOW", "follow\x00", " follow"])
@pytest.mark.parametrize("encode", ["form", "json"])
def test_seed_send_refuses_a_kind_that_is_not_user_to_user(service_client, kind, encode):
    body = {"fromID": "2", "toID": "1", "message": "hi", "kind": kind}
    if encode == "form":
        response = service_client.post("/send", urlencode(body), content_type="application/x-www-form-urlencoded")
    else:
        response = service_client.post("/send", body, format="json")

    assert response.status_code == 400
    assert "kind" in response.json() or "kind" in str(response.json())
    assert OutboxEvent.objects.count() == 0


def test_seed_send_an_empty_kind_is_the_default_in_a_form_and_refused_in_json(service_client):
    form = service_client.post("/send", "fromID=2&toID=1&message=hi&kind=", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 202 and _only_outbox_task()[1].kind == "custom"  # an HTML form's unchosen field
    as_json = service_client.post("/send", {"fromID": "2", "toID": "1", "message": "hi", "kind": ""}, format="json")
    assert as_json.status_code == 400 and "kind" in as_json.json()


@pytest.mark.parametrize("change", [{"toID": "2"}, {"fromID": ""}, {"message": ""}])
def test_seed_send_bad_input_is_400(service_client, change):
    response = service_client.post("/send", {"fromID": "2", "toID": "1", "message": "hi", **change})

    assert response.status_code == 400
    assert set(response.json()) & {"fromID", "toID", "message"}
    assert OutboxEvent.objects.count() == 0


def test_body_over_64_kib_is_400(service_client):
    body = json.dumps({**VALID, "message": "x" * (64 * 1024)})
    response = service_client.post("/api/v1/notifications/", body, content_type="application/json")

    assert response.status_code == 400
    assert "limit is 65536 bytes" in response.json()["detail"]
    assert OutboxEvent.objects.count() == 0


def test_malformed_json_is_400(service_client):
    response = service_client.post("/api/v1/notifications/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_inbox_lists_newest_first_with_cursor_pages(service_client):
    recipient = RecipientFactory(external_id="1")
    made = [NotificationFactory(recipient=recipient, message=f"n{i}") for i in range(5)]
    NotificationFactory()  # someone else's

    first = service_client.get("/api/v1/recipients/1/notifications/?page_size=3").json()
    second = service_client.get(first["next"]).json()

    assert [n["message"] for n in first["results"]] == ["n4", "n3", "n2"]
    assert [n["message"] for n in second["results"]] == ["n1", "n0"]
    assert first["results"][0]["id"] == made[4].notification_id
    assert second["next"] is None


def test_inbox_page_size_defaults_to_50_and_is_capped_at_200(service_client):
    recipient = RecipientFactory(external_id="1")
    NotificationFactory.create_batch(210, recipient=recipient)

    assert len(service_client.get("/api/v1/recipients/1/notifications/").json()["results"]) == 50
    assert len(service_client.get("/api/v1/recipients/1/notifications/?page_size=500").json()["results"]) == 200


def test_seed_route_lists_the_same_inbox(service_client):
    NotificationFactory(recipient=RecipientFactory(external_id="1"), message="hello")

    response = service_client.get("/notifications/1")

    assert response.status_code == 200
    assert [n["message"] for n in response.json()["results"]] == ["hello"]


def test_unknown_recipient_has_an_empty_inbox(service_client):
    response = service_client.get("/api/v1/recipients/nobody/notifications/")

    assert response.status_code == 200
    assert response.json()["results"] == []


ROUTES = [
    ("post", "/api/v1/notifications/"),
    ("post", "/send"),
    ("get", "/api/v1/recipients/1/notifications/"),
    ("get", "/notifications/1"),
    ("get", "/api/schema/"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_anonymous_requests_are_401(anonymous_client, method, path):
    response = getattr(anonymous_client, method)(path, VALID if method == "post" else None, format="json")

    assert response.status_code == 401
    assert OutboxEvent.objects.count() == 0


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_logged_in_non_staff_users_are_403(method, path):
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("someone", password="pw-123456789"))

    response = getattr(client, method)(path, VALID if method == "post" else None, format="json")

    assert response.status_code == 403


def test_staff_login_uses_the_browsable_api():
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True))

    response = client.get("/api/v1/recipients/1/notifications/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert b"Django REST framework" in response.content


def test_unknown_api_route_is_json_404(service_client):
    response = service_client.get("/api/v1/nothing-here/")

    assert response.status_code == 404
    assert response.json() == {"detail": "No API route matches /api/v1/nothing-here/."}


def test_openapi_schema_and_docs_are_served(service_client):
    schema = service_client.get("/api/schema/?format=json")
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True))
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert "/api/v1/notifications/" in schema.json()["paths"]
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
