"""Service tokens are remembered per process, and every use is still checked by the database: a
token deleted, rotated, or whose user was deactivated is refused on its next request. The accepted
notification is one statement on the wire, and that statement checks the token itself."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.models import IdempotencyKey, OutboxEvent
from core.testing import WireStatements
from inbox.authentication import service_tokens_forget

pytestmark = pytest.mark.django_db

BODY = {"sender": "2", "recipient": "1", "kind": "like", "message": "hi"}
SEND = "/api/v1/notifications/"
INBOX = "/api/v1/recipients/1/notifications/"


@pytest.fixture(autouse=True)
def _fresh_memory():
    service_tokens_forget()
    yield
    service_tokens_forget()


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def token() -> Token:
    return Token.objects.create(user=get_user_model().objects.create(username="app"))


def _warm(client: APIClient) -> None:
    """Both kinds of route once, so that the token is remembered."""
    assert client.post(SEND, BODY, format="json").status_code == 202
    assert client.get(INBOX).status_code == 200


def test_an_accepted_notification_is_one_statement(token):
    client = _client(token.key)
    _warm(client)

    with WireStatements(connection) as wire:
        response = client.post(SEND, BODY, format="json")

    assert response.status_code == 202
    assert len(wire.statements) == 1, wire.statements
    assert wire.statements[0].startswith('INSERT INTO "core_outboxevent"') and "authtoken_token" in wire.statements[0]


def test_the_seed_route_is_one_statement_too(token):
    client = _client(token.key)
    _warm(client)

    with WireStatements(connection) as wire:
        response = client.post("/send", {"fromID": "2", "toID": "1", "message": "hi"}, format="json")

    assert response.status_code == 202
    assert len(wire.statements) == 1, wire.statements


def test_with_an_idempotency_key_it_is_three(token):
    """The token check, the key's claim (one upsert, expired keys taken over), the INSERT and the
    answer recorded; the transaction's BEGIN and COMMIT are the test's own here."""
    client = _client(token.key)
    _warm(client)

    with WireStatements(connection) as wire:
        response = client.post(SEND, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 202
    statements = [s for s in wire.statements if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) == 4, statements
    assert IdempotencyKey.objects.get().response_status == 202


@pytest.mark.parametrize("route", [SEND, "/send", INBOX])
@pytest.mark.parametrize("how", ["deleted", "rotated", "deactivated"])
def test_a_remembered_token_is_refused_as_soon_as_it_ends(token, how, route):
    client = _client(token.key)
    _warm(client)
    outbox = OutboxEvent.objects.count()

    if how == "deleted":
        Token.objects.filter(key=token.key).delete()
    elif how == "rotated":
        call_command("issue_token", "app", stdout=open("/dev/null", "w"))
    else:
        get_user_model().objects.filter(username="app").update(is_active=False)

    if route == INBOX:
        response = client.get(route)
    else:
        body = BODY if route == SEND else {"fromID": "2", "toID": "1", "message": "hi"}
        response = client.post(route, body, format="json")
    assert response.status_code == 401, response.content
    assert OutboxEvent.objects.count() == outbox
    assert client.post(SEND, BODY, format="json").status_code == 401  # and it stays refused


@pytest.mark.parametrize("request_kind", ["bad input", "idempotency replay", "held send"])
def test_a_deleted_token_gets_401_on_every_other_answer_of_the_send_route(token, request_kind):
    client = _client(token.key)
    _warm(client)
    assert client.post(SEND, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 202
    outbox = OutboxEvent.objects.count()
    Token.objects.filter(key=token.key).delete()

    if request_kind == "bad input":
        response = client.post(SEND, {**BODY, "kind": "nope"}, format="json")
    elif request_kind == "idempotency replay":
        response = client.post(SEND, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")
    else:
        response = client.post(SEND, {**BODY, "send_at": "2099-01-01T00:00:00Z"}, format="json")

    assert response.status_code == 401, response.content
    assert OutboxEvent.objects.count() == outbox


def test_the_rotated_token_works_at_once(token):
    client = _client(token.key)
    _warm(client)
    call_command("issue_token", "app", stdout=open("/dev/null", "w"))

    new = _client(Token.objects.get(user__username="app").key)

    assert new.post(SEND, BODY, format="json").status_code == 202
    assert client.post(SEND, BODY, format="json").status_code == 401


def test_an_unknown_token_is_401_and_writes_nothing():
    response = _client("0" * 40).post(SEND, BODY, format="json")

    assert response.status_code == 401
    assert not OutboxEvent.objects.exists()
