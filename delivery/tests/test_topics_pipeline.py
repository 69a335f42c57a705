"""A notification to a topic (real processes, broker and PostgreSQL): every subscriber but its sender
gets it once, through the dispatcher and the worker, with the usual preferences and channels."""

import pytest

from campaigns.models import Campaign, CampaignStatus
from conftest import wait_until
from delivery.models import ChannelDelivery, Delivery
from delivery.selectors import notification_trace
from inbox.models import Notification, Preference, Recipient

pytestmark = pytest.mark.pipeline


def test_a_topic_of_four_subscribers_one_the_sender_one_opted_out(stack, service_client):
    stack.start("run_dispatcher")
    stack.start("run_worker")
    assert service_client.put("/api/v1/topics/post:42/subscribers/", {"recipients": ["1", "2", "3", "7"]},
                              format="json").json() == {"added": 4}
    Recipient.objects.filter(external_id="2").update(email="two@example.com")
    Preference.objects.create(recipient=Recipient.objects.get(external_id="3"), kinds={"like": False})
    service_client.put("/api/v1/topics/post:43/subscribers/", {"recipients": ["9"]}, format="json")

    response = service_client.post("/api/v1/notifications/", {
        "sender": "7", "topic": "post:42", "kind": "like", "message": "Tito liked your post", "data": {"post": 42}},
        format="json")
    assert response.status_code == 202, response.content
    notification_id = response.json()["id"]

    campaign = wait_until(lambda: (c := Campaign.objects.get(id=int(notification_id))).status == CampaignStatus.COMPLETED
                          and c, timeout=60, what="the topic's notification settled")
    assert (campaign.targeted, campaign.delivered, campaign.skipped, campaign.failed) == (3, 2, 1, 0)
    rows = {r.recipient.external_id: r for r in Notification.objects.select_related("recipient")}
    assert set(rows) == {"1", "2"}  # not the sender, not the one opted out of likes, not post:43's
    assert {r.notification_id for r in rows.values()} == {f"{notification_id}:1", f"{notification_id}:2"}
    assert all((r.sender, r.kind, r.message, r.data) == ("7", "like", "Tito liked your post", {"post": 42})
               for r in rows.values())
    assert ChannelDelivery.objects.get().recipient_external_id == "2"  # the one with an email
    assert Delivery.objects.get(notification_id=f"{notification_id}:3").reason == "opted out of like"
    assert notification_trace(notification_id=f"{notification_id}:1").status == "delivered"
