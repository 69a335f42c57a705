"""Recipient tokens end: when the recipient is deleted (even if it is created again), and when a
service revokes them. No route reached with a recipient token creates a recipient."""

import pytest
from rest_framework.test import APIClient

from inbox.authentication import recipient_token_issue, recipient_token_read
from inbox.factories import NotificationFactory, RecipientFactory
from inbox.models import Preference, Recipient

pytestmark = pytest.mark.django_db

INBOX = "/api/v1/recipients/bob/notifications/"


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def bob():
    recipient = RecipientFactory(external_id="bob")
    NotificationFactory(recipient=recipient)
    return recipient


RECIPIENT_ROUTES = [
    ("get", INBOX),
    ("get", "/notifications/bob"),
    ("get", f"{INBOX}unread-count/"),
    ("post", f"{INBOX}read-all/"),
    ("post", f"{INBOX}x/read/"),
    ("get", "/api/v1/recipients/bob/preferences/"),
    ("put", "/api/v1/recipients/bob/preferences/"),
]


@pytest.mark.parametrize(("method", "path"), RECIPIENT_ROUTES)
def test_a_deleted_recipients_token_is_401_and_creates_nothing(service_client, bob, method, path):
    client = _bearer(recipient_token_issue(recipient_id="bob")[0])
    assert client.get(f"{INBOX}unread-count/").status_code == 200

    assert service_client.delete("/api/v1/recipients/bob/").status_code == 204
    response = getattr(client, method)(path, {"kinds": {"like": False}}, format="json")

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert not Recipient.objects.filter(external_id="bob").exists()
    assert not Preference.objects.exists()


def test_a_recreated_recipient_does_not_revive_old_tokens(service_client, bob):
    old = _bearer(recipient_token_issue(recipient_id="bob")[0])
    service_client.delete("/api/v1/recipients/bob/")

    assert service_client.post("/api/v1/recipients/", {"id": "bob"}, format="json").json() == {"created": 1, "updated": 0}

    assert old.get(INBOX).status_code == 401
    assert old.put("/api/v1/recipients/bob/preferences/", {"kinds": {"like": False}}, format="json").status_code == 401
    fresh = _bearer(service_client.post("/api/v1/recipients/bob/tokens/").json()["token"])
    assert fresh.get(INBOX).status_code == 200


def test_a_service_revokes_all_of_a_recipients_tokens(service_client, bob):
    tokens = [_bearer(recipient_token_issue(recipient_id="bob")[0]) for _ in range(2)]
    alice = _bearer(recipient_token_issue(recipient_id="alice")[0])

    response = service_client.delete("/api/v1/recipients/bob/tokens/")

    assert response.status_code == 204
    assert [t.get(INBOX).status_code for t in tokens] == [401, 401]
    assert alice.get("/api/v1/recipients/alice/notifications/").status_code == 200  # only bob's
    issued_after = _bearer(service_client.post("/api/v1/recipients/bob/tokens/").json()["token"])
    assert issued_after.get(INBOX).status_code == 200
    assert Recipient.objects.get(external_id="bob").notifications.count() == 1  # nothing else changed


def test_only_services_revoke_tokens(service_client, anonymous_client, bob):
    token = recipient_token_issue(recipient_id="bob")[0]

    assert _bearer(token).delete("/api/v1/recipients/bob/tokens/").status_code == 403
    assert anonymous_client.delete("/api/v1/recipients/bob/tokens/").status_code == 401
    assert _bearer(token).get(INBOX).status_code == 200  # not revoked by either
    assert service_client.delete("/api/v1/recipients/nobody/tokens/").status_code == 404
    assert not Recipient.objects.filter(external_id="nobody").exists()


def test_preferences_set_for_a_recipient_token_never_create_the_recipient():
    """Deleted between the token check and the write: the PUT answers 404, the recipient stays deleted."""
    from inbox import services

    with pytest.raises(Recipient.DoesNotExist):
        services.preference_set(recipient_external_id="ghost", kinds={}, channels={}, create_recipient=False)
    assert not Recipient.objects.filter(external_id="ghost").exists()


@pytest.mark.parametrize("payload", [
    {"r": "bob", "exp": 4_000_000_000, "n": "x"},  # a token from before generations
    {"r": "bob", "g": 0, "exp": 4_000_000_000},
    {"r": ["bob"], "g": "x", "exp": 4_000_000_000},
    ["bob"],
])
def test_tokens_without_a_key_and_generation_are_401(bob, payload):
    from django.core import signing

    from inbox.authentication import SALT

    response = _bearer(signing.dumps(payload, salt=SALT, compress=True)).get(INBOX)

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid recipient token."


def test_checking_a_token_costs_one_indexed_query(bob, django_assert_num_queries):
    token = recipient_token_issue(recipient_id="bob")[0]

    with django_assert_num_queries(1) as captured:
        assert recipient_token_read(token).recipient_pk == bob.pk

    assert '"inbox_recipient"."external_id" =' in captured.captured_queries[0]["sql"]  # its unique index


def test_a_token_does_not_show_the_recipients_key(bob):
    from django.core import signing

    from inbox.authentication import SALT

    payload = signing.loads(recipient_token_issue(recipient_id="bob")[0], salt=SALT)

    assert set(payload) == {"r", "g", "exp", "n"}  # g: an HMAC of the key and generation, not the key


def test_a_token_of_another_generation_is_401(bob):
    from django.core import signing

    from inbox.authentication import SALT

    other = signing.dumps({"r": "bob", "g": "0" * 24, "exp": 4_000_000_000, "n": "x"}, salt=SALT, compress=True)

    assert _bearer(other).get(INBOX).status_code == 401
