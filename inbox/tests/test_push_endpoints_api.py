"""Push endpoints at the API: inward targets refused (400 on push_endpoint, nothing stored), a signing
secret per endpoint shown once, rotation with a grace period, secrets never listed."""

import socket
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from inbox.models import Recipient
from inbox.services import push_secret_rotate, recipients_resolve

INWARD = [
    "http://127.0.0.1:5432/",
    "http://localhost:8080/admin/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://0.0.0.0:80/",
    "http://[::1]:80/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.0.0.1/",
    "http://192.168.0.10:8080/hook",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://user:pass@example.com/",
    "ftp://example.com/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://inward.example.com/hook",  # resolves to 10.9.8.7 (the resolver below)
    "javascript:alert(1)",
    "not a url",
]


@pytest.fixture(autouse=True)
def resolver(monkeypatch, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    real = socket.getaddrinfo
    answers = {"inward.example.com": "10.9.8.7", "hooks.example.com": "93.184.216.34",
               "other.example.com": "93.184.216.35"}

    def resolve(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.parametrize("url", INWARD)
def test_an_inward_push_endpoint_is_a_400_on_the_field_and_stores_nothing(service_client, url):
    created = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": url}, format="json")
    many = service_client.post("/api/v1/recipients/", [{"id": "r2"}, {"id": "r3", "push_endpoint": url}], format="json")

    assert created.status_code == 400, created.content
    assert "push_endpoint" in created.json()
    assert many.status_code == 400 and set(many.json()) == {"1"} and many.json()["1"]["push_endpoint"]
    assert not Recipient.objects.exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:5432/", "http://localhost/", "http://inward.example.com/"])
def test_an_inward_push_endpoint_is_refused_by_patch(service_client, url):
    Recipient.objects.create(external_id="r1", push_endpoint="https://hooks.example.com/a")

    answer = service_client.patch("/api/v1/recipients/r1/", {"push_endpoint": url}, format="json")

    assert answer.status_code == 400 and "push_endpoint" in answer.json()
    assert Recipient.objects.get().push_endpoint == "https://hooks.example.com/a"


def test_the_refusal_names_the_reason(service_client):
    answer = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "http://169.254.169.254/"},
                                 format="json")

    [message] = answer.json()["push_endpoint"]
    assert "169.254.169.254 is a cloud metadata address" in message


def test_private_networks_are_accepted_when_allowed(service_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True

    answer = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "http://127.0.0.1:9/"}, format="json")
    refused = service_client.post("/api/v1/recipients/", {"id": "r2", "push_endpoint": "ftp://127.0.0.1/"}, format="json")

    assert answer.status_code == 200 and refused.status_code == 400


def test_a_name_that_does_not_resolve_now_is_accepted_and_checked_at_send_time(service_client):
    answer = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "https://nowhere.invalid/hook"},
                                 format="json")
    assert answer.status_code == 200


def test_setting_an_endpoint_returns_its_secret_once(service_client):
    first = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "https://hooks.example.com/a"},
                                format="json").json()
    again = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "https://hooks.example.com/a"},
                                format="json").json()
    other = service_client.post("/api/v1/recipients/", {"id": "r1", "locale": "de"}, format="json").json()

    secret = first["push_secrets"]["r1"]
    assert secret.startswith("whsec_") and Webhook(secret)  # a valid Standard Webhooks secret
    assert again == {"created": 0, "updated": 1} and other == {"created": 0, "updated": 1}
    assert Recipient.objects.get().push_secret == secret


def test_each_endpoint_gets_its_own_secret(service_client):
    answer = service_client.post("/api/v1/recipients/", [
        {"id": "a", "push_endpoint": "https://hooks.example.com/a"},
        {"id": "b", "push_endpoint": "https://hooks.example.com/b"},
        {"id": "c", "email": "c@example.com"},
    ], format="json").json()

    assert set(answer["push_secrets"]) == {"a", "b"}
    assert answer["push_secrets"]["a"] != answer["push_secrets"]["b"]


def test_a_changed_endpoint_gets_a_new_secret_and_the_old_one_stops(service_client):
    first = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "https://hooks.example.com/a"},
                                format="json").json()["push_secrets"]["r1"]

    patched = service_client.patch("/api/v1/recipients/r1/", {"push_endpoint": "https://other.example.com/b"}, format="json")
    same = service_client.patch("/api/v1/recipients/r1/", {"push_endpoint": "https://other.example.com/b"}, format="json")

    assert patched.status_code == 200
    assert patched.json()["push_secret"].startswith("whsec_") and patched.json()["push_secret"] != first
    assert same.json()["push_secret"] is None
    assert recipients_resolve(external_ids={"r1"}, create=set())["r1"].push_secrets == (patched.json()["push_secret"],)


def test_secrets_are_never_listed(service_client):
    service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "https://hooks.example.com/a"}, format="json")
    secret = Recipient.objects.get().push_secret

    listed = service_client.get("/api/v1/recipients/")
    one = service_client.get("/api/v1/recipients/r1/")
    email_only = service_client.patch("/api/v1/recipients/r1/", {"email": "x@example.com"}, format="json")

    for answer in (listed, one, email_only):
        assert answer.status_code == 200 and secret not in answer.content.decode()
        assert "push_secret_previous" not in answer.content.decode()


def test_rotation_keeps_the_old_secret_signing_for_the_grace_period(service_client, settings):
    settings.WEBHOOK_SECRET_GRACE_SECONDS = 3600
    old = service_client.post("/api/v1/recipients/", {"id": "r1", "push_endpoint": "https://hooks.example.com/a"},
                              format="json").json()["push_secrets"]["r1"]

    answer = service_client.post("/api/v1/recipients/r1/push-secret/rotate/")

    assert answer.status_code == 200
    new = answer.json()["push_secret"]
    assert new.startswith("whsec_") and new != old
    assert answer.json()["previous_valid_until"] is not None
    assert recipients_resolve(external_ids={"r1"}, create=set())["r1"].push_secrets == (new, old)

    # After the grace period only the new one signs.
    Recipient.objects.update(push_secret_previous_until=timezone.now() - timedelta(seconds=1))
    assert recipients_resolve(external_ids={"r1"}, create=set())["r1"].push_secrets == (new,)


def test_rotating_twice_keeps_only_the_last_two(db, settings):
    Recipient.objects.create(external_id="r1", push_endpoint="https://hooks.example.com/a")
    first = push_secret_rotate(recipient_external_id="r1").push_secret
    second = push_secret_rotate(recipient_external_id="r1").push_secret

    assert recipients_resolve(external_ids={"r1"}, create=set())["r1"].push_secrets == (second, first)


def test_rotation_of_unknown_recipient_or_without_endpoint(service_client):
    Recipient.objects.create(external_id="no-hook")

    assert service_client.post("/api/v1/recipients/ghost/push-secret/rotate/").status_code == 404
    conflict = service_client.post("/api/v1/recipients/no-hook/push-secret/rotate/")
    assert conflict.status_code == 409 and "push endpoint" in conflict.json()["detail"]


def test_rotation_needs_a_service_token(anonymous_client, db, service_client):
    Recipient.objects.create(external_id="r1", push_endpoint="https://hooks.example.com/a")
    token = service_client.post("/api/v1/recipients/r1/tokens/").json()["token"]
    before = Recipient.objects.get().push_secret
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    assert anonymous_client.post("/api/v1/recipients/r1/push-secret/rotate/").status_code == 403
    assert Recipient.objects.get().push_secret == before


def test_the_admin_shows_no_secret_in_clear(admin_client, db):
    recipient = Recipient.objects.create(external_id="r1", push_endpoint="https://hooks.example.com/a")

    page = admin_client.get(f"/admin/inbox/recipient/{recipient.pk}/change/").content.decode()
    listing = admin_client.get("/admin/inbox/recipient/").content.decode()

    assert recipient.push_secret[:10] in page and recipient.push_secret not in page
    assert recipient.push_secret[:10] not in listing


def test_recipients_created_by_the_worker_have_no_secret_until_they_get_an_endpoint(db):
    recipients_resolve(external_ids={"new"}, create={"new"})
    assert recipients_resolve(external_ids={"new"}, create=set())["new"].push_secrets == ()
