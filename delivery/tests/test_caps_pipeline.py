"""Frequency caps through real processes (API, broker, dispatcher, worker, PostgreSQL): a cap of 3
in-app likes an hour, 5 likes sent through the API: 3 delivered, 2 skipped `capped`."""

import pytest

from conftest import wait_until
from delivery.models import CapEvent, Delivery
from inbox.models import Notification

pytestmark = pytest.mark.pipeline


def test_a_cap_of_3_in_app_likes_an_hour(stack, service_client):
    response = service_client.post("/api/v1/frequency-caps/", {"channel": "in_app", "kind": "like", "max": 3,
                                                               "per_seconds": 3600}, format="json")
    assert response.status_code == 201, response.content
    stack.start("run_dispatcher")
    stack.start("run_worker")

    ids = []
    for n in range(5):
        response = service_client.post("/api/v1/notifications/", {
            "sender": f"fan{n}", "recipient": "1", "kind": "like", "message": f"fan{n} liked your post"}, format="json")
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])
    # A follow is not a like: the cap leaves it alone.
    follow = service_client.post("/api/v1/notifications/", {
        "sender": "fan9", "recipient": "1", "kind": "follow", "message": "fan9 followed you"}, format="json").json()["id"]

    wait_until(lambda: Delivery.objects.filter(notification_id__in=[*ids, follow]).count()
               + Notification.objects.filter(notification_id__in=[*ids, follow]).exclude(
                   notification_id__in=Delivery.objects.values("notification_id")).count() >= 6,
               timeout=60, what="the six notifications settled")
    ledger = {d.notification_id: (d.outcome, d.reason) for d in Delivery.objects.filter(notification_id__in=ids)}
    # The API's order is the recipient's partition's order: the first three delivered.
    assert ledger == {**{i: ("delivered", "") for i in ids[:3]}, **{i: ("skipped", "capped") for i in ids[3:]}}
    assert set(Notification.objects.filter(recipient__external_id="1").values_list("notification_id", flat=True)) == {
        *ids[:3], follow}
    assert CapEvent.objects.count() == 3
    trace = service_client.get(f"/api/v1/notifications/{ids[4]}/").json()
    assert (trace["status"], trace["reason"], trace["in_app"]) == ("skipped", "capped", None)


def test_a_campaign_fanned_out_counts_and_is_capped(stack, service_client):
    """One in-app notification of any kind a day: a user who had a like gets no campaign; the others do."""
    assert service_client.post("/api/v1/frequency-caps/", {"channel": "in_app", "kind": None, "max": 1,
                                                           "per_seconds": 86400}, format="json").status_code == 201
    assert service_client.post("/api/v1/recipients/", [{"id": str(n)} for n in (1, 2, 3)],
                               format="json").status_code in (200, 201)
    stack.start("run_dispatcher")
    stack.start("run_worker")
    like = service_client.post("/api/v1/notifications/", {"sender": "9", "recipient": "1", "kind": "like",
                                                          "message": "9 liked your post"}, format="json").json()["id"]
    wait_until(lambda: Notification.objects.filter(notification_id=like).exists(), timeout=60, what="the like")

    response = service_client.post("/api/v1/campaigns/", {"title": "Sale", "body": "50% off", "kind": "offer",
                                                          "segment": {"type": "ALL_USERS"}}, format="json")
    assert response.status_code == 201, response.content
    campaign_id = response.json()["id"]
    campaign = wait_until(lambda: (c := service_client.get(f"/api/v1/campaigns/{campaign_id}/").json())["status"]
                          == "completed" and c, timeout=60, what="the campaign completed")
    assert (campaign["targeted"], campaign["delivered"], campaign["skipped"], campaign["failed"]) == (3, 2, 1, 0)
    assert Delivery.objects.get(notification_id=f"{campaign_id}:1").reason == "capped"
    assert set(Notification.objects.filter(campaign_id=campaign_id).values_list("notification_id", flat=True)) == {
        f"{campaign_id}:2", f"{campaign_id}:3"}
