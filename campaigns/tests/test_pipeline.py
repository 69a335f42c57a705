"""Campaign API -> outbox -> relay -> dispatcher -> worker -> inbox, with real processes."""

import signal

import pytest
from django.db.models import Count

from campaigns.models import Campaign, CampaignStatus
from conftest import wait_until
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline


def _seed_recipients(count: int, attributes=lambda i: {}) -> list[str]:
    Recipient.objects.bulk_create(
        [Recipient(external_id=f"r{i}", attributes=attributes(i)) for i in range(count)], batch_size=5000
    )
    return [f"r{i}" for i in range(count)]


def _create_campaign(client, segment: dict, title: str = "New Year Sale") -> int:
    response = client.post("/api/v1/campaigns/", {"title": title, "body": "20% off", "segment": segment}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _campaign(campaign_id: int) -> Campaign:
    return Campaign.objects.get(id=campaign_id)


def _completed(campaign_id: int):
    campaign = _campaign(campaign_id)
    return campaign if campaign.status == CampaignStatus.COMPLETED else None


def _reached(campaign_id: int) -> set[str]:
    return set(Notification.objects.filter(campaign_id=campaign_id).values_list("recipient__external_id", flat=True))


def test_all_users_campaign_of_2000_completes_with_one_row_each(stack, service_client):
    _seed_recipients(2000)
    for command in ("run_relay", "run_dispatcher", "run_worker"):
        stack.start(command)

    campaign_id = _create_campaign(service_client, {"type": "ALL_USERS"})

    campaign = wait_until(lambda: _completed(campaign_id), timeout=60, what="campaign completed")
    assert (campaign.targeted, campaign.delivered, campaign.skipped, campaign.failed) == (2000, 2000, 0, 0)
    assert Notification.objects.filter(campaign_id=campaign_id).count() == 2000
    assert len(_reached(campaign_id)) == 2000
    inbox_item = service_client.get("/api/v1/recipients/r7/notifications/").json()["results"][0]
    assert (inbox_item["id"], inbox_item["title"], inbox_item["message"], inbox_item["kind"]) == (
        f"{campaign_id}:r7", "New Year Sale", "20% off", "offer",
    )


def test_user_ids_and_attribute_segments_reach_exactly_their_recipients(stack, service_client):
    countries = ["DE", "FR", "US"]
    _seed_recipients(300, attributes=lambda i: {"country": countries[i % 3], "tier": i % 4})
    for command in ("run_relay", "run_dispatcher", "run_worker"):
        stack.start(command)

    by_ids = _create_campaign(service_client, {"type": "USER_IDS", "ids": ["r1", "r5", "r299", "not-a-recipient"]})
    by_eq = _create_campaign(service_client, {"type": "ATTRIBUTE", "attribute": "country", "op": "eq", "value": "DE"})
    by_in = _create_campaign(service_client, {"type": "ATTRIBUTE", "attribute": "tier", "op": "in", "value": [1, 3]})
    nobody = _create_campaign(service_client, {"type": "ATTRIBUTE", "attribute": "country", "op": "eq", "value": "JP"})

    for campaign_id in (by_ids, by_eq, by_in, nobody):
        wait_until(lambda: _completed(campaign_id), timeout=60, what=f"campaign {campaign_id} completed")
    assert _reached(by_ids) == {"r1", "r5", "r299"}
    assert _reached(by_eq) == {f"r{i}" for i in range(0, 300, 3)}
    assert _reached(by_in) == {f"r{i}" for i in range(300) if i % 4 in (1, 3)}
    assert _reached(nobody) == set()
    assert _campaign(nobody).targeted == 0
    assert _campaign(by_ids).targeted == _campaign(by_ids).delivered == 3


def test_a_dispatcher_killed_mid_fan_out_and_restarted_leaves_no_recipient_twice(stack, service_client):
    total = 20_000
    _seed_recipients(total)
    stack.start("run_relay")
    stack.start("run_worker")
    # Small pages make the fan-out long enough to be killed in the middle of it; small chunks make
    # deliveries start while it runs.
    dispatcher = stack.start("run_dispatcher", env={"DISPATCHER_PAGE_SIZE": "50", "DISPATCHER_CHUNK_SIZE": "20"})
    # A first campaign through every process: once it completes, all three are consuming, so the
    # worker delivers while the big fan-out is still producing (it takes about a second and a half).
    warm_up = _create_campaign(service_client, {"type": "USER_IDS", "ids": ["r0"]})
    wait_until(lambda: _completed(warm_up), timeout=60, what="warm-up campaign completed")

    campaign_id = _create_campaign(service_client, {"type": "ALL_USERS"})
    wait_until(lambda: Notification.objects.filter(campaign_id=campaign_id).exists(), what="first deliveries")
    stack.stop(dispatcher, signal.SIGKILL)
    assert _campaign(campaign_id).status == CampaignStatus.DISPATCHING, "the dispatcher finished before the kill"
    stack.start("run_dispatcher")

    campaign = wait_until(lambda: _completed(campaign_id), timeout=90, what="campaign completed after the restart")
    assert (campaign.targeted, campaign.delivered) == (total, total)
    rows = Notification.objects.filter(campaign_id=campaign_id)
    assert rows.count() == total
    assert not rows.values("recipient").annotate(n=Count("id")).filter(n__gt=1).exists()


def test_cancel_stops_delivery_of_tasks_already_dispatched(stack, service_client):
    _seed_recipients(500)
    stack.start("run_relay")
    stack.start("run_dispatcher")  # no worker yet: the tasks wait on the topic

    campaign_id = _create_campaign(service_client, {"type": "ALL_USERS"})
    wait_until(lambda: _campaign(campaign_id).status == CampaignStatus.DISPATCHED, what="campaign dispatched")
    assert service_client.post(f"/api/v1/campaigns/{campaign_id}/cancel/").json()["status"] == "cancelled"
    stack.start("run_worker")

    campaign = wait_until(lambda: (c := _campaign(campaign_id)).skipped == 500 and c, timeout=60, what="all 500 skipped")
    assert (campaign.status, campaign.delivered) == (CampaignStatus.CANCELLED, 0)
    assert not Notification.objects.filter(campaign_id=campaign_id).exists()


def test_cancel_before_the_fan_out_produces_nothing(stack, service_client):
    _seed_recipients(50)
    stack.start("run_relay")
    campaign_id = _create_campaign(service_client, {"type": "ALL_USERS"})
    service_client.post(f"/api/v1/campaigns/{campaign_id}/cancel/")
    for command in ("run_dispatcher", "run_worker"):
        stack.start(command)
    sentinel = _create_campaign(service_client, {"type": "USER_IDS", "ids": ["r1"]})

    wait_until(lambda: _completed(sentinel), timeout=60, what="a later campaign completed")
    campaign = _campaign(campaign_id)
    assert (campaign.status, campaign.targeted, campaign.delivered, campaign.skipped) == ("cancelled", 0, 0, 0)


def test_recipients_deleted_before_delivery_are_skipped(stack, service_client):
    _seed_recipients(100)
    stack.start("run_relay")
    stack.start("run_dispatcher")
    campaign_id = _create_campaign(service_client, {"type": "ALL_USERS"})
    wait_until(lambda: _campaign(campaign_id).status == CampaignStatus.DISPATCHED, what="campaign dispatched")
    for i in range(10):
        assert service_client.delete(f"/api/v1/recipients/r{i}/").status_code == 204
    stack.start("run_worker")

    campaign = wait_until(lambda: _completed(campaign_id), timeout=60, what="campaign completed")
    assert (campaign.targeted, campaign.delivered, campaign.skipped) == (100, 90, 10)
    assert _reached(campaign_id) == {f"r{i}" for i in range(10, 100)}
