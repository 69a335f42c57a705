"""Campaigns that wait: `send_at` and `local_time` validation, the zone grouping, when each zone is
due, and the release, fan-out, completion, cancel and redispatch of held campaigns (no broker: the
dispatcher's publisher is a list)."""

from datetime import UTC, datetime, time, timedelta

import pytest

from campaigns import schedule, selectors, services
from campaigns.models import Campaign, CampaignStatus
from campaigns.segments import AllUsers, Attribute
from core import broker, clock
from core.messages import CAMPAIGN_ZONE_ALL, CampaignCreated, InvalidPayload
from core.models import OutboxEvent, ScheduledItem
from inbox.models import Recipient

URL = "/api/v1/campaigns/"
VALID = {"title": "Morning", "body": "Good morning", "segment": {"type": "ALL_USERS"}}


class ListPublisher:
    """The dispatcher's publisher, keeping what it would produce."""

    def __init__(self):
        self.recipients: list[str] = []

    def begin(self) -> int:
        return 3

    def publish(self, chunk, *, partition: int) -> None:
        self.recipients.extend(chunk.recipients)

    def flush(self) -> None:
        pass


def _seed(zones: dict[str, str], **attributes) -> None:
    Recipient.objects.bulk_create([Recipient(external_id=rid, timezone=tz, attributes=attributes.get(rid, {}))
                                   for rid, tz in zones.items()])


def _events() -> list[CampaignCreated]:
    return [CampaignCreated.decode(bytes(e.payload))
            for e in OutboxEvent.objects.filter(topic=broker.OFFERS_CREATED).order_by("id")]


# --- pure -----------------------------------------------------------------------------------------


def test_local_time_next_is_that_wall_time_in_the_zone_at_or_after_the_start():
    start = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # 08:00 in Berlin (CEST), 15:00 in Tokyo
    nine = time(9, 0)
    assert schedule.local_time_next(start=start, wall=nine, zone_name="Europe/Berlin") == datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
    assert schedule.local_time_next(start=start, wall=nine, zone_name="Asia/Tokyo") == datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
    assert schedule.local_time_next(start=start, wall=time(6, 0), zone_name="UTC") == start  # at the start: now
    # Blank (and a stored name not known here): DEFAULT_TIMEZONE (UTC in the tests).
    assert schedule.local_time_next(start=start, wall=nine, zone_name="") == datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    # A wall time the clocks skip (New York, 2026-03-08 02:30 does not happen): the instant of the change.
    gap = schedule.local_time_next(start=datetime(2026, 3, 8, 5, 0, tzinfo=UTC), wall=time(2, 30),
                                   zone_name="America/New_York")
    assert gap == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_zones_due_is_one_part_per_zone_with_local_time_and_one_for_all_without():
    start = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    assert schedule.zones_due(start=start, local_time=None, recipients_by_zone={"UTC": 3}) == {CAMPAIGN_ZONE_ALL: start}
    assert schedule.zones_due(start=start, local_time=time(9, 0), recipients_by_zone={"UTC": 3, "Asia/Tokyo": 1}) == {
        "Asia/Tokyo": datetime(2026, 6, 2, 0, 0, tzinfo=UTC), "UTC": datetime(2026, 6, 1, 9, 0, tzinfo=UTC)}


def test_campaign_created_carries_a_zone_only_when_set():
    assert CampaignCreated(5).encode() == b'{"v":1,"type":"CampaignCreated","campaign":5}'  # as before
    assert CampaignCreated.decode(CampaignCreated(5).encode()) == CampaignCreated(5)
    zoned = CampaignCreated(5, zone="Asia/Tokyo")
    assert CampaignCreated.decode(zoned.encode()) == zoned
    for bad in (b'{"v":1,"type":"CampaignCreated","campaign":5,"zone":""}',
                b'{"v":1,"type":"CampaignCreated","campaign":5,"zone":7}'):
        with pytest.raises(InvalidPayload):
            CampaignCreated.decode(bad)


# --- validation (API) -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field", "says"), [
    ({"local_time": "9:00"}, "local_time", "Must be HH:MM"),
    ({"local_time": "24:00"}, "local_time", "Must be HH:MM"),
    ({"local_time": "09:00 Europe/Berlin"}, "local_time", "Must be HH:MM"),
    ({"local_time": 900}, "local_time", "Must be HH:MM"),
    ({"send_at": "2026-12-24T09:00:00"}, "send_at", "offset"),
    ({"send_at": "tomorrow"}, "send_at", "Datetime has wrong format"),
    ({"send_at": "OLD"}, "send_at", "at most a day in the past"),
    ({"send_at": "FAR"}, "send_at", "at most a year ahead"),
])
def test_a_bad_send_at_or_local_time_is_a_400_naming_the_field(service_client, change, field, says):
    value = change.get("send_at")
    if value == "OLD":
        change = {"send_at": (clock.now() - timedelta(days=1, minutes=1)).isoformat()}
    elif value == "FAR":
        change = {"send_at": (clock.now() + timedelta(days=367)).isoformat()}
    answer = service_client.post(URL, {**VALID, **change}, format="json")
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == [field] and says in answer.json()[field][0]
    assert not Campaign.objects.exists() and not ScheduledItem.objects.exists()


@pytest.mark.django_db
def test_a_recipient_time_zone_that_is_not_iana_is_a_400_naming_it(service_client):
    for bad in ("Mars/Base", "CET+1", "+02:00", "europe/berlin"):
        answer = service_client.post("/api/v1/recipients/", {"id": "z", "timezone": bad}, format="json")
        assert answer.status_code == 400 and "timezone" in str(answer.json()), (bad, answer.content)


@pytest.mark.django_db
def test_a_send_at_a_little_in_the_past_is_now(service_client):
    answer = service_client.post(URL, {**VALID, "send_at": (clock.now() - timedelta(hours=2)).isoformat()}, format="json")
    assert answer.status_code == 201
    assert (answer.json()["status"], answer.json()["scheduled"]) == ("queued", 0)
    assert _events() == [CampaignCreated(answer.json()["id"])] and not ScheduledItem.objects.exists()


# --- grouping and scheduling ----------------------------------------------------------------------


@pytest.mark.django_db
def test_recipients_by_zone_is_one_group_by_with_blank_read_as_the_default(django_assert_num_queries):
    _seed({"b1": "Europe/Berlin", "b2": "Europe/Berlin", "t1": "Asia/Tokyo", "u1": "", "u2": "", "u3": "UTC",
           "out": "America/New_York"}, out={"skip": True})
    segment = Attribute(attribute="skip", op="eq", value=True)
    with django_assert_num_queries(1):
        everyone = selectors.recipients_by_zone(segment=AllUsers())
    assert everyone == {"Europe/Berlin": 2, "Asia/Tokyo": 1, "UTC": 3, "America/New_York": 1}
    assert selectors.recipients_by_zone(segment=segment) == {"America/New_York": 1}


@pytest.mark.django_db
def test_a_send_at_ahead_is_held_as_one_item_for_all_recipients(service_client):
    _seed({"a": "Europe/Berlin", "b": ""})
    send_at = clock.now() + timedelta(minutes=5)
    answer = service_client.post(URL, {**VALID, "send_at": send_at.isoformat()}, format="json")
    assert answer.status_code == 201
    body = answer.json()
    assert (body["status"], body["scheduled"], body["released"], body["local_time"]) == ("scheduled", 2, 0, "")
    [item] = ScheduledItem.objects.all()
    assert (item.kind, item.due_at, item.payload) == (services.RELEASE, send_at, {"campaign": body["id"], "zone": "*",
                                                                    "held": "campaign send_at"})
    assert _events() == []
    assert services.campaigns_release_due() == 0  # not before its time
    from prometheus_client import REGISTRY

    metric = "notifications_campaign_parts_released_total"
    before = REGISTRY.get_sample_value(metric) or 0.0
    with clock.moved(minutes=5):
        assert services.campaigns_release_due() == 1
    assert _events() == [CampaignCreated(body["id"], zone=CAMPAIGN_ZONE_ALL)]
    assert REGISTRY.get_sample_value(metric) == before + 1
    assert not ScheduledItem.objects.exists()


@pytest.mark.django_db
def test_local_time_holds_one_item_per_zone_released_fanned_out_and_completed_zone_by_zone(service_client):
    zones = {"b1": "Europe/Berlin", "b2": "Europe/Berlin", "t1": "Asia/Tokyo", "u1": "", "u2": "UTC"}
    _seed(zones)
    answer = service_client.post(URL, {**VALID, "local_time": "09:00"}, format="json")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    campaign_id = body["id"]
    assert (body["status"], body["scheduled"], body["released"]) == ("scheduled", 5, 0)
    items = {item.payload["zone"]: item.due_at for item in ScheduledItem.objects.all()}
    now = clock.now()
    assert items == {z: schedule.local_time_next(start=now, wall=time(9, 0), zone_name=z)
                     for z in ("Asia/Tokyo", "Europe/Berlin", "UTC")}  # (the API's now is a moment before)
    assert {z: part["recipients"] for z, part in body["zones"].items()} == {"Asia/Tokyo": 1, "Europe/Berlin": 2, "UTC": 2}

    # A recipient who joins in a zone with no item: fanned out with the zone due last.
    Recipient.objects.create(external_id="n1", timezone="America/New_York")
    order = sorted(items, key=items.get)
    expected = {"Europe/Berlin": {"b1", "b2"}, "Asia/Tokyo": {"t1"}, "UTC": {"u1", "u2"}}
    expected[order[-1]] |= {"n1"}
    released = 0
    for i, zone in enumerate(order):
        with clock.moved(seconds=(items[zone] - clock.now()).total_seconds() - 1):
            assert services.campaigns_release_due() == 0  # a second before its 09:00
        with clock.moved(seconds=(items[zone] - clock.now()).total_seconds() + 1):
            assert services.campaigns_release_due() == 1
        [event] = _events()[i:]
        assert event == CampaignCreated(campaign_id, zone=zone)
        publisher = ListPublisher()
        assert services.campaign_dispatch(campaign_id=campaign_id, publisher=publisher, zone=zone) == len(expected[zone])
        assert set(publisher.recipients) == expected[zone]
        assert services.campaign_dispatch(campaign_id=campaign_id, publisher=ListPublisher(), zone=zone) == 0  # again
        released += len(expected[zone])
        services.campaign_progress_add(campaign_id=campaign_id, delivered=len(expected[zone]))
        campaign = Campaign.objects.get(id=campaign_id)
        assert (campaign.scheduled, campaign.released, campaign.targeted, campaign.delivered) == (5, released, released, released)
        last = i == len(order) - 1
        assert campaign.status == (CampaignStatus.COMPLETED if last else CampaignStatus.DISPATCHED)
        assert campaign.zones_left == len(order) - 1 - i
    assert not ScheduledItem.objects.exists()


@pytest.mark.django_db
def test_the_last_zone_fanned_out_after_the_others_settled_completes_the_campaign():
    _seed({"b1": "Europe/Berlin", "t1": "Asia/Tokyo"})
    campaign = services.campaign_create(title="t", body="", kind="offer", segment=AllUsers(), data={}, local_time=time(9, 0))
    due = {item.payload["zone"]: item.due_at for item in ScheduledItem.objects.all()}
    first, second = sorted(due, key=due.get)
    with clock.moved(seconds=(due[first] - clock.now()).total_seconds() + 1):
        services.campaigns_release_due()
    services.campaign_dispatch(campaign_id=campaign.id, publisher=ListPublisher(), zone=first)
    services.campaign_progress_add(campaign_id=campaign.id, delivered=1)  # settled == targeted, one zone left
    assert Campaign.objects.get(id=campaign.id).status == CampaignStatus.DISPATCHED
    services.campaign_progress_add(campaign_id=campaign.id, delivered=1)  # (a worker ahead of the fan-out)
    with clock.moved(seconds=(due[second] - clock.now()).total_seconds() + 1):
        services.campaigns_release_due()
    services.campaign_dispatch(campaign_id=campaign.id, publisher=ListPublisher(), zone=second)
    campaign.refresh_from_db()
    assert (campaign.status, campaign.targeted, campaign.released) == (CampaignStatus.COMPLETED, 2, 2)


@pytest.mark.django_db
def test_cancelling_a_scheduled_campaign_drops_its_items_and_nothing_is_released(service_client):
    _seed({"b1": "Europe/Berlin", "t1": "Asia/Tokyo"})
    campaign_id = service_client.post(URL, {**VALID, "local_time": "09:00"}, format="json").json()["id"]
    assert ScheduledItem.objects.count() == 2
    answer = service_client.post(f"{URL}{campaign_id}/cancel/")
    assert (answer.status_code, answer.json()["status"]) == (200, "cancelled")
    assert not ScheduledItem.objects.exists()
    with clock.moved(days=2):
        assert services.campaigns_release_due() == 0
    assert _events() == []
    # An event released just before the cancel finds it cancelled: nothing fanned out.
    publisher = ListPublisher()
    assert services.campaign_dispatch(campaign_id=campaign_id, publisher=publisher, zone="Asia/Tokyo") == 0
    assert publisher.recipients == []


@pytest.mark.django_db
def test_redispatch_after_a_broker_loss_fans_out_only_released_zones_again():
    _seed({"b1": "Europe/Berlin", "t1": "Asia/Tokyo"})
    campaign = services.campaign_create(title="t", body="", kind="offer", segment=AllUsers(), data={}, local_time=time(9, 0))
    due = {item.payload["zone"]: item.due_at for item in ScheduledItem.objects.all()}
    first, second = sorted(due, key=due.get)
    with clock.moved(seconds=(due[first] - clock.now()).total_seconds() + 1):
        services.campaigns_release_due()
    services.campaign_dispatch(campaign_id=campaign.id, publisher=ListPublisher(), zone=first)
    OutboxEvent.objects.all().delete()

    assert services.campaigns_redispatch_recent() == 1
    assert _events() == [CampaignCreated(campaign.id, zone=first)]
    campaign.refresh_from_db()
    assert (campaign.status, campaign.zones_left) == (CampaignStatus.DISPATCHING, 2)
    publisher = ListPublisher()
    assert services.campaign_dispatch(campaign_id=campaign.id, publisher=publisher, zone=first) == 1
    campaign.refresh_from_db()
    assert (campaign.status, campaign.targeted, campaign.released, campaign.zones_left) == (
        CampaignStatus.DISPATCHED, 1, 1, 1)
    assert ScheduledItem.objects.get().payload["zone"] == second  # still held


@pytest.mark.django_db
def test_local_time_to_an_empty_segment_is_held_in_the_default_zone_for_whoever_is_there_then():
    campaign = services.campaign_create(title="t", body="", kind="offer", segment=AllUsers(), data={}, local_time=time(9, 0))
    assert (campaign.status, campaign.scheduled, list(campaign.zones)) == (CampaignStatus.SCHEDULED, 0, ["UTC"])
    Recipient.objects.create(external_id="late", timezone="Asia/Tokyo")
    [item] = ScheduledItem.objects.all()
    with clock.moved(seconds=(item.due_at - clock.now()).total_seconds() + 1):
        services.campaigns_release_due()
    publisher = ListPublisher()
    services.campaign_dispatch(campaign_id=campaign.id, publisher=publisher, zone="UTC")
    assert publisher.recipients == ["late"]


@pytest.mark.django_db
def test_a_held_campaign_recipient_trace_says_scheduled(service_client):
    _seed({"b1": "Europe/Berlin"})
    campaign_id = service_client.post(URL, {**VALID, "local_time": "09:00"}, format="json").json()["id"]
    trace = service_client.get(f"/api/v1/notifications/{campaign_id}:b1/").json()
    assert (trace["status"], trace["recipient"], trace["campaign_id"]) == ("scheduled", "b1", campaign_id)
