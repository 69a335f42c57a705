"""The real worker honours preferences: opted-out deliveries are skipped, never failed."""

import pytest

from campaigns.models import Campaign
from conftest import wait_until
from delivery.models import ChannelDelivery, Delivery
from inbox.models import Notification, Preference, Recipient

pytestmark = pytest.mark.pipeline


def test_opted_out_kinds_and_channels_are_skipped(stack, service_client, webhook_receiver):
    hook = f"{webhook_receiver.url}/flaky"
    everyone = [Recipient.objects.create(external_id=f"p{i}", push_endpoint=hook) for i in range(4)]
    Preference.objects.create(recipient=everyone[0], kinds={"offer": False})  # no offers at all
    Preference.objects.create(recipient=everyone[1], channels={"webhook": False})  # in-app only
    Preference.objects.create(recipient=everyone[2], channels={"in_app": False})  # webhook only
    Preference.objects.create(recipient=everyone[3], channels={"in_app": False, "webhook": False})  # nothing left
    for command in ("run_relay", "run_dispatcher", "run_worker"):
        stack.start(command)

    campaign_id = service_client.post("/api/v1/campaigns/", {"title": "Sale", "segment": {"type": "ALL_USERS"}},
                                      format="json").json()["id"]

    campaign = wait_until(lambda: (c := Campaign.objects.get(id=campaign_id)).status == "completed" and c, what="completed")
    assert (campaign.targeted, campaign.delivered, campaign.skipped, campaign.failed) == (4, 2, 2, 0)
    reasons = dict(Delivery.objects.values_list("recipient_external_id", "reason"))
    assert reasons == {"p0": "opted out of offer", "p1": "", "p2": "", "p3": "opted out of every channel"}
    assert set(Notification.objects.values_list("recipient__external_id", flat=True)) == {"p1"}
    # The webhook-only recipient gets its webhook, retried twice, without any inbox row to read it from.
    wait_until(lambda: ChannelDelivery.objects.filter(recipient_external_id="p2", status="sent").exists(), what="webhook")
    assert list(ChannelDelivery.objects.values_list("recipient_external_id", "attempts")) == [("p2", 3)]
    assert len(webhook_receiver.requests_for("/flaky")) == 3
