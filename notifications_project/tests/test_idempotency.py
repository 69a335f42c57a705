import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns.models import Campaign
from core.models import OutboxEvent

BODY = {"sender": "2", "recipient": "1", "kind": "like", "message": "hi"}


def _client(name: str) -> APIClient:
    user = get_user_model().objects.create(username=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "body", "created"), [
    ("/api/v1/notifications/", BODY, 202),
    ("/send", {"fromID": "2", "toID": "1", "message": "hi"}, 202),
    ("/api/v1/campaigns/", {"title": "Sale", "segment": {"type": "ALL_USERS"}}, 201),
    ("/offers", {"title": "Sale", "segment": {"type": "ALL_USERS"}}, 201),
])
def test_a_repeat_with_the_same_key_gets_the_first_answer_and_creates_nothing(path, body, created):
    client = _client("app")

    first = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other_key = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    assert first.status_code == again.status_code == created
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other_key.json() != first.json()
    assert OutboxEvent.objects.count() == 2


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422():
    client = _client("app")
    client.post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")

    response = client.post("/api/v1/notifications/", {**BODY, "message": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 422
    assert "another request body" in response.json()["detail"]
    assert OutboxEvent.objects.count() == 1


@pytest.mark.django_db
def test_keys_belong_to_one_client():
    _client("a").post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")
    response = _client("b").post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 202
    assert OutboxEvent.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["x" * 256, " "])
def test_a_bad_key_is_400_and_creates_nothing(key):
    response = _client("app").post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert OutboxEvent.objects.count() == 0


@pytest.mark.django_db
def test_an_invalid_request_does_not_use_up_its_key():
    client = _client("app")
    bad = client.post("/api/v1/notifications/", {**BODY, "kind": "poke"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    fixed = client.post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert (bad.status_code, fixed.status_code) == (400, 202)
    assert OutboxEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_identical_requests_create_one_campaign():
    client_token = Token.objects.create(user=get_user_model().objects.create(username="app")).key
    body = {"title": "Sale", "segment": {"type": "ALL_USERS"}}
    answers, start = [], threading.Barrier(10)

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {client_token}")
        start.wait()
        response = client.post("/api/v1/campaigns/", body, format="json", HTTP_IDEMPOTENCY_KEY="concurrent")
        answers.append((response.status_code, response.json()["id"]))
        connection.close()

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == 10
    assert {status for status, _ in answers} == {201}
    assert len({campaign_id for _, campaign_id in answers}) == 1
    assert Campaign.objects.count() == 1
    assert OutboxEvent.objects.count() == 1
