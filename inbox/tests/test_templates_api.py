"""/api/v1/templates/ and /api/v1/kinds/: templates parsed at save (a 400 naming the part and the line),
a preview that renders without sending, registered kinds accepted wherever a kind is, and sends
without a message once the kind has a default template (still one statement)."""

import pytest
from django.db import connection

from core.models import OutboxEvent
from core.testing import WireStatements
from inbox.authentication import recipient_token_issue, service_tokens_forget
from inbox.models import NotificationKind, Template

pytestmark = pytest.mark.django_db

TEMPLATES = "/api/v1/templates/"
KINDS = "/api/v1/kinds/"
SEND = "/api/v1/notifications/"
LIKE = {"kind": "like", "channel": "in_app", "locale": "", "title": "New like",
        "body": "{{ actor }} liked {{ data.post }}"}


def test_create_read_update_delete(service_client):
    created = service_client.post(TEMPLATES, {**LIKE, "locale": "de-at"}, format="json")
    assert created.status_code == 201, created.json()
    template = created.json()
    assert (template["kind"], template["channel"], template["locale"]) == ("like", "in_app", "de-AT")

    assert service_client.get(f"{TEMPLATES}{template['id']}/").json()["body"] == LIKE["body"]
    assert [t["id"] for t in service_client.get(f"{TEMPLATES}?kind=like&locale=de-AT").json()["results"]] == [template["id"]]

    updated = service_client.put(f"{TEMPLATES}{template['id']}/", {**LIKE, "body": "{{ actor }} mag das"}, format="json")
    assert updated.status_code == 200 and updated.json()["locale"] == ""
    patched = service_client.patch(f"{TEMPLATES}{template['id']}/", {"title": "Gefällt"}, format="json")
    assert patched.status_code == 200 and patched.json()["body"] == "{{ actor }} mag das"

    assert service_client.delete(f"{TEMPLATES}{template['id']}/").status_code == 204
    assert not Template.objects.exists()


@pytest.mark.parametrize(("change", "field", "fragment"), [
    ({"kind": "poke"}, "kind", "valid choices"),
    ({"kind": "offer"}, "kind", "campaign kind"),
    ({"channel": "sms"}, "channel", "valid choices"),
    ({"locale": "german"}, "locale", "BCP 47"),
    ({"locale": "xx"}, "locale", "unknown language"),
    ({"body": "Hi\n{% for x in data.list %}\n{{ x }}"}, "body", "Line 3: "),
    ({"title": "{{ actor | shout }}"}, "title", "Line 1: unknown filter 'shout'"),
    ({"body": "x" * 10_001}, "body", "the limit is 10000"),
    ({"body": ""}, "body", "Required"),
    ({"subject": "Hi"}, "subject", "not subject"),
    ({"channel": "email", "subject": "Hi"}, "text", "Required"),
    ({"body": "a\u0000b"}, "body", "Null characters"),
])
def test_bad_templates_are_400_naming_the_field(service_client, change, field, fragment):
    response = service_client.post(TEMPLATES, {**LIKE, **change}, format="json")

    assert response.status_code == 400
    assert fragment in " ".join(response.json()[field]), response.json()
    assert not Template.objects.exists()


def test_one_template_per_kind_channel_and_locale(service_client):
    first = service_client.post(TEMPLATES, LIKE, format="json").json()

    response = service_client.post(TEMPLATES, LIKE, format="json")

    assert response.status_code == 400
    assert f"PUT /api/v1/templates/{first['id']}/" in response.json()["locale"][0]


def test_preview_renders_the_stored_template_with_fallback(service_client):
    service_client.post(TEMPLATES, LIKE, format="json")
    service_client.post(TEMPLATES, {**LIKE, "locale": "de", "title": "Neues Like",
                                    "body": '{{ actor }} gefällt {{ data.post }} ({{ data.n | plural: one: "# Mal", '
                                            'other: "# Mal" }})'}, format="json")

    german = service_client.post(f"{TEMPLATES}preview/", {"kind": "like", "locale": "de-AT", "actor": "Tito",
                                                          "data": {"post": "dein Foto", "n": 2}}, format="json")
    french = service_client.post(f"{TEMPLATES}preview/", {"kind": "like", "locale": "fr", "actor": "Tito",
                                                          "data": {"post": "your photo"}}, format="json")

    assert german.status_code == 200, german.json()
    assert german.json() | {"template": None} == {"template": None, "locale": "de", "title": "Neues Like",
                                                  "body": "Tito gefällt dein Foto (2 Mal)"}
    assert french.json()["body"] == "Tito liked your photo" and french.json()["locale"] == ""
    assert OutboxEvent.objects.count() == 0


def test_preview_of_parts_given_and_its_errors(service_client):
    given = service_client.post(f"{TEMPLATES}preview/", {"kind": "like", "body": "{{ recipient.attributes.name }}!",
                                                         "recipient": {"id": "1", "attributes": {"name": "Mia"}}},
                                format="json")
    failing = service_client.post(f"{TEMPLATES}preview/", {"kind": "like", "body": "{{ 1 | divided_by: 0 }}"},
                                  format="json")
    missing = service_client.post(f"{TEMPLATES}preview/", {"kind": "follow", "locale": "de-AT"}, format="json")

    assert given.json()["body"] == "Mia!"
    assert failing.status_code == 400 and "divide by 0" in failing.json()["body"][0]
    assert missing.status_code == 400 and "No in_app template of follow in de-AT, de, the default locale" in missing.json()["kind"][0]


def test_recipient_tokens_cannot_touch_templates_or_kinds(client):
    token, _ = recipient_token_issue(recipient_id="1")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    assert client.get(TEMPLATES, **headers).status_code == 403
    assert client.post(TEMPLATES, LIKE, content_type="application/json", **headers).status_code == 403
    assert client.get(KINDS, **headers).status_code == 403


def test_kinds_register_with_templates_and_are_accepted_everywhere(service_client):
    response = service_client.post(KINDS, {"name": "order.shipped", "urgent": True, "templates": [
        {"channel": "in_app", "body": "Your order {{ data.order }} is on its way"},
        {"channel": "email", "locale": "de", "subject": "Versandt", "text": "Bestellung {{ data.order }}"},
    ]}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["urgent"] is True and len(response.json()["templates"]) == 2
    names = [k["name"] for k in service_client.get(KINDS).json()]
    assert names[:4] == ["follow", "mention", "like", "custom"] and "order.shipped" in names
    assert service_client.get(f"{KINDS}order.shipped/").json()["built_in"] is False
    assert service_client.get(f"{KINDS}nope/").status_code == 404
    # A registered kind is a kind: sends (without a message, from its template), preferences, the inbox filter.
    assert service_client.post(SEND, {"sender": "2", "recipient": "1", "kind": "order.shipped", "data": {"order": 7}},
                               format="json").status_code == 202
    assert service_client.put("/api/v1/recipients/1/preferences/", {"kinds": {"order.shipped": False}},
                              format="json").status_code == 200
    assert service_client.get("/api/v1/recipients/1/notifications/?kind=order.shipped").status_code == 200
    assert service_client.put("/api/v1/recipients/1/preferences/", {"kinds": {"order.lost": False}},
                              format="json").status_code == 400


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "like"}, "name"),
    ({"name": "Has Space"}, "name"),
    ({"name": "x" * 17}, "name"),
    ({"name": "ok", "templates": [{"channel": "in_app", "body": "{% if %}"}]}, "templates"),
    ({"name": "ok", "templates": [{"channel": "in_app", "body": "a"}, {"channel": "in_app", "body": "b"}]}, "templates"),
    ({"name": "ok", "urgent": "perhaps"}, "urgent"),
])
def test_bad_kinds_are_400_naming_the_field(service_client, body, field):
    response = service_client.post(KINDS, body, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not NotificationKind.objects.exists() and not Template.objects.exists()


def test_a_kind_registered_twice_is_400(service_client):
    assert service_client.post(KINDS, {"name": "digest"}, format="json").status_code == 201

    assert "registered already" in service_client.post(KINDS, {"name": "digest"}, format="json").json()["name"][0]


def test_an_unknown_kind_is_still_400(service_client):
    response = service_client.post(SEND, {"sender": "2", "recipient": "1", "kind": "poke", "message": "hi"}, format="json")

    assert response.status_code == 400 and "kind" in response.json()


def test_a_kind_registered_by_another_process_is_found(service_client):
    NotificationKind.objects.create(name="elsewhere")  # no memory of it here

    response = service_client.post(SEND, {"sender": "2", "recipient": "1", "kind": "elsewhere", "message": "hi"},
                                   format="json")

    assert response.status_code == 202


def test_a_send_without_a_message_is_one_statement_that_checks_the_template(service_client):
    service_tokens_forget()
    service_client.post(TEMPLATES, LIKE, format="json")
    body = {"sender": "2", "recipient": "1", "kind": "like", "data": {"post": "p"}}
    assert service_client.post(SEND, body, format="json").status_code == 202  # the token is remembered now

    with WireStatements(connection) as wire:
        response = service_client.post(SEND, body, format="json")

    assert response.status_code == 202
    assert len(wire.statements) == 1 and "inbox_template" in wire.statements[0], wire.statements
    # The template deleted since: refused, naming message, and nothing queued.
    Template.objects.all().delete()
    outbox = OutboxEvent.objects.count()
    refused = service_client.post(SEND, body, format="json")
    assert refused.status_code == 400 and "no default in_app template" in refused.json()["message"][0]
    assert OutboxEvent.objects.count() == outbox


def test_a_registered_kind_send_is_one_statement_once_known(service_client):
    service_tokens_forget()
    service_client.post(KINDS, {"name": "nudge"}, format="json")
    body = {"sender": "2", "recipient": "1", "kind": "nudge", "message": "hi"}
    assert service_client.post(SEND, body, format="json").status_code == 202

    with WireStatements(connection) as wire:
        assert service_client.post(SEND, body, format="json").status_code == 202

    assert len(wire.statements) == 1, wire.statements


def test_a_template_for_a_registered_kind_and_only_a_language_locale(service_client):
    service_client.post(KINDS, {"name": "nudge"}, format="json")

    response = service_client.post(TEMPLATES, {**LIKE, "kind": "nudge", "locale": "pt-br"}, format="json")

    assert response.status_code == 201 and response.json()["locale"] == "pt-BR"
