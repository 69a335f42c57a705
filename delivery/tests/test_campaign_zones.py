"""A held campaign's parts (one per time zone) and the ledger: a recipient who moves from a zone
released earlier into one released later is not reached twice, and the campaign completes."""

from datetime import time, timedelta

import pytest

from campaigns import schedule, services
from campaigns.models import Campaign, CampaignStatus
from campaigns.segments import segment_parse
from campaigns.tests.test_schedule import ListPublisher
from core import clock
from core.messages import CampaignChunk
from delivery.services import deliveries_settle
from inbox.models import Notification, Preference, Recipient

pytestmark = pytest.mark.django_db


def _release_and_settle(campaign_id: int, zone: str, due_at) -> list[str]:
    with clock.moved(seconds=(due_at - clock.now()).total_seconds() + 1):
        assert services.campaigns_release_due() == 1
    publisher = ListPublisher()
    services.campaign_dispatch(campaign_id=campaign_id, publisher=publisher, zone=zone)
    if publisher.recipients:
        deliveries_settle(chunks=[(CampaignChunk(campaign_id, tuple(publisher.recipients)), None)])
    return sorted(publisher.recipients)


@pytest.mark.parametrize("first_was", ["delivered in-app", "skipped (opted out)"])
def test_a_recipient_who_moves_into_a_zone_released_later_is_reached_once_and_the_campaign_completes(
        service_client, first_was):
    """Found from outside: the moved recipient was fanned out again, counted twice in `targeted`, and
    the campaign stayed `dispatched` for good (the ledger dropped the repeat, which nothing counted)."""
    due = {zone: schedule.local_time_next(start=clock.now(), wall=time(9, 0), zone_name=zone)
           for zone in ("UTC", "Asia/Tokyo")}
    first, second = sorted(due, key=due.get)
    Recipient.objects.bulk_create([Recipient(external_id=ext, timezone=tz) for ext, tz in (
        ("u1", "UTC"), ("mover", first), ("t1", "Asia/Tokyo"))])
    if first_was.startswith("skipped"):
        Preference.objects.create(recipient=Recipient.objects.get(external_id="mover"), kinds={"offer": False})
    created = service_client.post("/api/v1/campaigns/", {"title": "Morning", "segment": {"type": "ALL_USERS"},
                                                        "local_time": "09:00"}, format="json").json()
    campaign_id = created["id"]
    assert "mover" in _release_and_settle(campaign_id, first, due[first])
    # It moves into the other zone before that one is released.
    Recipient.objects.filter(external_id="mover").update(timezone=second)
    seconds = _release_and_settle(campaign_id, second, due[second])

    assert "mover" not in seconds
    campaign = Campaign.objects.get(id=campaign_id)
    assert (campaign.targeted, campaign.released, campaign.status) == (3, 3, CampaignStatus.COMPLETED)
    assert campaign.delivered + campaign.skipped == 3
    assert Notification.objects.filter(notification_id=f"{campaign_id}:mover").count() == (
        1 if first_was.startswith("delivered") else 0)


def test_a_redispatched_part_counts_its_settled_recipients_again():
    """The broker lost tasks: a part fanned out again still targets everyone in it (the ledger drops
    the repeats, which were counted when first settled), or `targeted` would shrink below `delivered`."""
    Recipient.objects.bulk_create([Recipient(external_id=ext, timezone="UTC") for ext in ("a", "b")])
    campaign = services.campaign_create(title="t", body="b", kind="offer", segment=segment_parse({"type": "ALL_USERS"}),
                                        data={}, send_at=clock.now() + timedelta(minutes=1))
    part = next(iter(Campaign.objects.get(id=campaign.id).zones))
    with clock.moved(minutes=2):
        services.campaigns_release_due()
    publisher = ListPublisher()
    services.campaign_dispatch(campaign_id=campaign.id, publisher=publisher, zone=part)
    deliveries_settle(chunks=[(CampaignChunk(campaign.id, tuple(publisher.recipients)), None)])
    assert Campaign.objects.get(id=campaign.id).status == CampaignStatus.COMPLETED
    Campaign.objects.filter(id=campaign.id).update(status=CampaignStatus.DISPATCHED)
    assert services.campaigns_redispatch_recent() == 1
    again = ListPublisher()
    assert services.campaign_dispatch(campaign_id=campaign.id, publisher=again, zone=part) == 2
    assert Campaign.objects.get(id=campaign.id).targeted == 2
