"""Scale-out: two workers and two dispatchers share their groups on 12 partitions; one of each is
SIGKILLed in the middle of a 50,000-recipient campaign, and every recipient gets it exactly once."""

import signal

import pytest
from django.db.models import Count

from campaigns.models import Campaign
from conftest import wait_until
from delivery.models import Delivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

RECIPIENTS = 50_000


def test_one_worker_and_one_dispatcher_killed_mid_campaign_still_deliver_each_recipient_once(stack, service_client, kafka):
    assert kafka.KAFKA_PARTITIONS == 12
    Recipient.objects.bulk_create([Recipient(external_id=f"s{i}") for i in range(RECIPIENTS)], batch_size=10_000)
    # Many pages, so that the kill lands mid-fan-out; small chunks, so that deliveries start meanwhile.
    slow_fan_out = {"DISPATCHER_PAGE_SIZE": "50", "DISPATCHER_CHUNK_SIZE": "20"}
    workers = [stack.start("run_worker", "--batch-size", "500") for _ in range(2)]
    dispatchers = [stack.start("run_dispatcher", env=slow_fan_out) for _ in range(2)]
    wait_until(lambda: all("consuming" in stack.log_of(p) for p in workers + dispatchers), what="all four consuming")

    campaign_id = service_client.post("/api/v1/campaigns/", {"title": "Scale", "segment": {"type": "ALL_USERS"}},
                                      format="json").json()["id"]

    def fanning_out():  # the dispatcher that holds the campaign's partition reports progress
        return next((p for p in dispatchers if f"campaign {campaign_id}: " in stack.log_of(p)), None)

    active = wait_until(fanning_out, timeout=60, what="a dispatcher fanning out")
    wait_until(lambda: Notification.objects.filter(campaign_id=campaign_id).count() >= 2_000, what="deliveries under way")
    # Both killed without a chance to commit or leave their groups.
    stack.stop(active, signal.SIGKILL)
    stack.stop(workers[0], signal.SIGKILL)
    status_at_kill = Campaign.objects.get(id=campaign_id).status
    assert status_at_kill in ("dispatching", "dispatched"), "the kill came too late to prove anything"

    wait_until(lambda: Campaign.objects.get(id=campaign_id).status == "completed", timeout=240,
               what="the campaign completed by the survivors")
    campaign = Campaign.objects.get(id=campaign_id)
    assert (campaign.targeted, campaign.delivered, campaign.failed) == (RECIPIENTS, RECIPIENTS, 0)
    rows = Notification.objects.filter(campaign_id=campaign_id)
    assert rows.count() == RECIPIENTS
    assert not rows.values("recipient").annotate(n=Count("id")).filter(n__gt=1).exists()
    # Reached in-app only: each inbox row is its recipient's ledger entry (no second row per recipient).
    assert not Delivery.objects.filter(campaign_id=campaign_id).exists()
    if status_at_kill == "dispatching":  # the survivor took the campaign's partition over and redid the fan-out
        survivor = next(p for p in dispatchers if p is not active)
        assert f"campaign {campaign_id} dispatched to {RECIPIENTS} recipients" in stack.log_of(survivor)
