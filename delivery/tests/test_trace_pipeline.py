"""The trace over the API while real processes deliver (the real broker and PostgreSQL), and the
worker's retention thread."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from conftest import wait_until
from core.models import IdempotencyKey
from inbox.models import Preference, Recipient

pytestmark = pytest.mark.pipeline


def test_delivered_skipped_dead_lettered_and_retried_notifications_traced_over_the_api(stack, service_client, webhook_receiver):
    Recipient.objects.create(external_id="plain")
    Preference.objects.create(recipient=Recipient.objects.create(external_id="quiet"), kinds={"like": False})
    Recipient.objects.create(external_id="bad", push_endpoint=f"{webhook_receiver.url}/bad")
    Recipient.objects.create(external_id="flaky", push_endpoint=f"{webhook_receiver.url}/flaky")
    user = get_user_model().objects.create(username="old-client")
    IdempotencyKey.objects.create(scoped_key=f"{user.pk}:old", user=user, request_fingerprint="f",
                                  created_at=timezone.now() - timedelta(hours=25))

    ids = {
        name: service_client.post("/api/v1/notifications/", {"sender": "s", "recipient": name, "kind": "like",
                                                             "message": f"to {name}"}, format="json").json()["id"]
        for name in ("plain", "quiet", "bad", "flaky")
    }
    assert {service_client.get(f"/api/v1/notifications/{i}/").json()["status"] for i in ids.values()} == {"accepted"}
    stack.start("run_worker")  # it relays the outbox too

    def trace(name: str) -> dict:
        answer = service_client.get(f"/api/v1/notifications/{ids[name]}/")
        assert answer.status_code == 200, answer.content
        return answer.json()

    wait_until(lambda: trace("flaky")["status"] == "delivered", timeout=30, what="the flaky webhook delivered")
    wait_until(lambda: trace("bad")["status"] == "dead_lettered", timeout=30, what="the bad webhook dead-lettered")
    plain, quiet, bad, flaky = (trace(name) for name in ("plain", "quiet", "bad", "flaky"))

    assert (plain["status"], plain["channels"], plain["dead_letters"]) == ("delivered", [], [])
    assert plain["in_app"]["delivered_at"] and plain["settled_at"]
    assert (quiet["status"], quiet["reason"], quiet["in_app"]) == ("skipped", "opted out of like", None)
    assert bad["reason"].startswith("webhook: HTTP 400")
    assert [(c["channel"], c["status"], c["attempts"]) for c in bad["channels"]] == [("webhook", "dead", 1)]
    assert [(d["reason"], d["channel"], d["attempts"], d["status"]) for d in bad["dead_letters"]] == [
        ("permanent failure", "webhook", 1, "dead")]
    [channel] = flaky["channels"]
    assert (channel["status"], channel["attempts"], channel["last_error"]) == ("sent", 3, "")
    assert len(webhook_receiver.requests_for("/flaky")) == 3 and flaky["dead_letters"] == []
    assert flaky["in_app"] is not None

    # The worker's retention thread purged the key older than 24 hours at its start.
    wait_until(lambda: not IdempotencyKey.objects.filter(user=user).exists(), what="the old Idempotency-Key purged")
