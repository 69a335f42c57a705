"""Campaigns that wait, through the real pipeline (API in process; relay, dispatcher and worker
processes; the real broker and PostgreSQL). Time moves through the scheduler's clock: each worker
runs with CLOCK_OFFSET_SECONDS just past the next zone's 09:00, so no test waits for hours."""

import zoneinfo
from datetime import timedelta

import pytest

from campaigns.models import Campaign, CampaignStatus
from conftest import wait_until
from core import clock
from core.models import ScheduledItem
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

URL = "/api/v1/campaigns/"
ZONES = {"Asia/Tokyo": ["t1", "t2"], "Europe/Berlin": ["b1", "b2", "b3"], "": ["u1", "u2"]}  # blank: UTC


def _create(client, **fields) -> dict:
    answer = client.post(URL, {"title": "Good morning", "body": "Coffee's on us", "segment": {"type": "ALL_USERS"},
                               **fields}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def _reached(campaign_id: int) -> set[str]:
    return set(Notification.objects.filter(campaign_id=campaign_id).values_list("recipient__external_id", flat=True))


def test_local_time_reaches_each_zone_at_its_own_9_and_completes_after_the_last(stack, service_client):
    Recipient.objects.bulk_create([Recipient(external_id=rid, timezone=tz) for tz, ids in ZONES.items() for rid in ids])
    body = _create(service_client, local_time="09:00")
    campaign_id = body["id"]
    assert (body["status"], body["scheduled"], body["released"]) == ("scheduled", 7, 0)
    due = {item.payload["zone"]: item.due_at for item in ScheduledItem.objects.filter(key__startswith="campaign:")}
    assert sorted(due) == ["Asia/Tokyo", "Europe/Berlin", "UTC"]
    for zone, at in due.items():  # 09:00 on the wall clock of each zone
        assert at.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%H:%M") == "09:00"

    stack.start("run_relay")
    stack.start("run_dispatcher")
    members = {"UTC": set(ZONES[""]), "Asia/Tokyo": set(ZONES["Asia/Tokyo"]), "Europe/Berlin": set(ZONES["Europe/Berlin"])}
    reached: set[str] = set()
    worker = None
    for i, zone in enumerate(sorted(due, key=due.get)):
        assert _reached(campaign_id) == reached  # nobody of this zone (or a later one) before its 09:00
        if worker is not None:
            stack.stop(worker)
        offset = (due[zone] - clock.now()).total_seconds() + 1  # the worker's clock: just past this zone's 09:00
        worker = stack.start("run_worker", env={"DEBUG": "true", "CLOCK_OFFSET_SECONDS": f"{offset:.3f}"})
        reached |= members[zone]
        wait_until(lambda: _reached(campaign_id) == reached, timeout=60, what=f"the recipients in {zone} reached")
        last = i == len(due) - 1
        campaign = wait_until(lambda: (c := Campaign.objects.get(id=campaign_id)).delivered == len(reached) and c,
                              timeout=30, what="the zone's deliveries counted")
        assert (campaign.scheduled, campaign.released, campaign.targeted) == (7, len(reached), len(reached))
        if not last:
            assert campaign.status == CampaignStatus.DISPATCHED  # settled == targeted, but zones are left
            assert ScheduledItem.objects.filter(key__startswith=f"campaign:{campaign_id}:").count() == len(due) - 1 - i
    campaign = wait_until(lambda: (c := Campaign.objects.get(id=campaign_id)).status == CampaignStatus.COMPLETED and c,
                          timeout=30, what="the campaign completed after its last zone")
    assert (campaign.delivered, campaign.failed, campaign.skipped, campaign.released) == (7, 0, 0, 7)
    assert Notification.objects.filter(campaign_id=campaign_id).count() == 7  # once each
    answer = service_client.get(f"{URL}{campaign_id}/").json()
    assert (answer["status"], answer["scheduled"], answer["released"]) == ("completed", 7, 7)


def test_a_send_at_a_few_seconds_ahead_arrives_after_it_and_a_cancelled_one_never(stack, service_client):
    Recipient.objects.bulk_create([Recipient(external_id=f"s{i}") for i in range(5)])
    for command in ("run_relay", "run_dispatcher", "run_worker"):
        stack.start(command)
    cancelled = _create(service_client, title="cancelled", send_at=(clock.now() + timedelta(seconds=2)).isoformat())
    assert service_client.post(f"{URL}{cancelled['id']}/cancel/").json()["status"] == "cancelled"
    send_at = clock.now() + timedelta(seconds=4)  # due after the cancelled one: once it is in, that one's time is past
    held = _create(service_client, send_at=send_at.isoformat())
    assert (held["status"], held["scheduled"]) == ("scheduled", 5)

    campaign = wait_until(lambda: (c := Campaign.objects.get(id=held["id"])).status == CampaignStatus.COMPLETED and c,
                          timeout=60, what="the held campaign completed")
    assert (campaign.delivered, campaign.released, campaign.scheduled) == (5, 5, 5)
    first = min(Notification.objects.filter(campaign_id=held["id"]).values_list("delivered_at", flat=True))
    assert first >= send_at  # not before its time
    assert _reached(cancelled["id"]) == set()
    assert Campaign.objects.get(id=cancelled["id"]).status == CampaignStatus.CANCELLED
    assert not ScheduledItem.objects.filter(key__startswith="campaign:").exists()
