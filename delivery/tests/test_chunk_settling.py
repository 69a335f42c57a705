"""Settling a campaign chunk without the broker: recipients the campaign reaches in-app only are settled
as a set (their inbox row is their ledger entry); every other recipient is routed as a task, and no
recipient is settled twice, whichever way it went first."""

import pytest
from django.db import connection

from campaigns.factories import CampaignFactory
from campaigns.models import Campaign
from core import clock
from core.messages import CampaignChunk, NotificationTask, Origin
from delivery.models import ChannelDelivery, Delivery
from delivery.selectors import notification_trace
from delivery.services import deliveries_settle
from inbox import services as inbox_services
from inbox.factories import RecipientFactory
from inbox.models import Notification, Preference, Recipient

pytestmark = pytest.mark.django_db

ORIGIN = Origin("notifications.send", 0, 7)


def _chunk(campaign, *recipients: str) -> tuple[CampaignChunk, Origin]:
    return CampaignChunk(campaign_id=campaign.id, recipients=tuple(recipients)), ORIGIN


def _plain(*ids: str) -> list[Recipient]:
    return [RecipientFactory(external_id=i, email="") for i in ids]


def _inbox() -> dict[str, int]:
    return dict(Notification.objects.values_list("notification_id", "recipient_id"))


def test_plain_recipients_get_an_inbox_row_and_no_ledger_row_and_a_repeat_changes_nothing():
    campaign = CampaignFactory(status="dispatched", title="Sale", body="50% off", data={"code": "X"})
    a, b = _plain("a", "b")

    result = deliveries_settle(chunks=[_chunk(campaign, "a", "b", "a")])

    assert _inbox() == {f"{campaign.id}:a": a.pk, f"{campaign.id}:b": b.pk}
    row = Notification.objects.get(notification_id=f"{campaign.id}:a")
    assert (row.kind, row.title, row.message, row.data, row.campaign_id, row.created_at) == (
        campaign.kind, "Sale", "50% off", {"code": "X"}, campaign.id, campaign.created_at)
    assert not Delivery.objects.exists()
    assert (result.delivered, result.duplicates, result.skipped) == (2, 1, 0)
    campaign.refresh_from_db()
    assert campaign.delivered == 2

    again = deliveries_settle(chunks=[_chunk(campaign, "a", "b")],
                              tasks=[NotificationTask(notification_id=f"{campaign.id}:b", recipient="b",
                                                      campaign_id=campaign.id)])

    assert (again.delivered, again.duplicates) == (0, 3)
    assert len(_inbox()) == 2 and not Delivery.objects.exists()
    campaign.refresh_from_db()
    assert campaign.delivered == 2


def test_the_other_recipients_of_a_chunk_are_routed_one_by_one(settings):
    settings.PUSH_GATEWAY_URL = ""
    campaign = CampaignFactory(status="dispatched", kind="offer")
    _plain("plain")
    RecipientFactory(external_id="mail", email="mail@example.com")
    RecipientFactory(external_id="hook", email="", push_endpoint="https://hooks.example.com/n")
    Preference.objects.create(recipient=RecipientFactory(external_id="off", email=""), kinds={"offer": False})
    Preference.objects.create(recipient=RecipientFactory(external_id="prefs", email=""), kinds={"like": False})

    result = deliveries_settle(chunks=[_chunk(campaign, "plain", "mail", "hook", "off", "prefs", "gone")])

    c = campaign.id
    assert set(_inbox()) == {f"{c}:plain", f"{c}:mail", f"{c}:hook", f"{c}:prefs"}
    assert dict(Delivery.objects.values_list("notification_id", "reason")) == {
        f"{c}:mail": "", f"{c}:hook": "", f"{c}:off": "opted out of offer", f"{c}:prefs": "",
        f"{c}:gone": "recipient deleted"}
    assert set(ChannelDelivery.objects.values_list("notification_id", "channel", "origin_offset")) == {
        (f"{c}:mail", "email", 7), (f"{c}:hook", "webhook", 7)}
    assert (result.delivered, result.skipped, result.sends_scheduled) == (4, 2, 2)
    campaign.refresh_from_db()
    assert (campaign.delivered, campaign.skipped) == (4, 2)


def test_a_recipient_settled_in_a_set_is_not_settled_again_once_it_has_an_address():
    campaign = CampaignFactory(status="dispatched")
    _plain("a")
    deliveries_settle(chunks=[_chunk(campaign, "a")])
    Recipient.objects.filter(external_id="a").update(email="a@example.com")

    result = deliveries_settle(chunks=[_chunk(campaign, "a")])

    assert (result.delivered, result.duplicates, result.sends_scheduled) == (0, 1, 0)
    assert not Delivery.objects.exists() and not ChannelDelivery.objects.exists()


def test_a_recipient_settled_as_a_task_is_not_settled_again_in_a_set():
    campaign = CampaignFactory(status="dispatched")
    Preference.objects.create(recipient=RecipientFactory(external_id="a", email=""), kinds={"offer": False})
    deliveries_settle(chunks=[_chunk(campaign, "a")])
    Preference.objects.all().delete()  # opted in again: the skip stands, nothing is delivered late

    result = deliveries_settle(chunks=[_chunk(campaign, "a")])

    assert (result.delivered, result.duplicates) == (0, 1)
    assert not Notification.objects.exists()
    assert Delivery.objects.get().reason == "opted out of offer"


@pytest.mark.parametrize("status", ["cancelled", None])
def test_a_chunk_of_a_cancelled_or_unknown_campaign_is_skipped_in_the_ledger(status):
    campaign = CampaignFactory(status=status or "dispatched")
    _plain("a", "b")
    if status is None:
        Campaign.objects.filter(pk=campaign.pk).delete()

    result = deliveries_settle(chunks=[_chunk(campaign, "a", "b")])

    assert result.skipped == 2 and not Notification.objects.exists()
    assert set(Delivery.objects.values_list("reason", flat=True)) == {
        "campaign cancelled" if status else "campaign not found"}


def test_with_a_push_gateway_every_recipient_is_routed_as_a_task(settings):
    settings.PUSH_GATEWAY_URL = "https://gateway.example.com/push"
    campaign = CampaignFactory(status="dispatched")
    _plain("a", "b")

    result = deliveries_settle(chunks=[_chunk(campaign, "a", "b")])

    assert (result.delivered, result.sends_scheduled) == (2, 2)
    assert Delivery.objects.count() == 2 and len(_inbox()) == 2


def test_the_trace_of_a_recipient_settled_in_a_set_says_delivered():
    campaign = CampaignFactory(status="dispatched")
    _plain("a")
    deliveries_settle(chunks=[_chunk(campaign, "a")])

    trace = notification_trace(notification_id=f"{campaign.id}:a")

    assert (trace.status, trace.recipient, trace.campaign_id) == ("delivered", "a", campaign.id)
    assert trace.in_app is not None and trace.settled_at is not None


def test_hostile_recipient_ids_in_a_chunk_are_data_not_sql():
    campaign = CampaignFactory(status="dispatched")
    ids = ["x'); DROP TABLE inbox_notification; --", "%s", "%b", "{}", '"q"', "a,b", "\\", "ü用户", "\U0001F600"]
    _plain(*ids)

    result = deliveries_settle(chunks=[_chunk(campaign, *ids)])

    assert result.delivered == len(ids)
    assert set(_inbox()) == {f"{campaign.id}:{i}" for i in ids}


def test_a_deleted_recipient_loses_rows_written_in_the_same_instant_at_the_second_erase(settings):
    recipient = RecipientFactory(external_id="gone", email="")
    pk = recipient.pk
    inbox_services.recipient_delete(recipient=recipient)
    # A worker that had read the recipient before the delete committed writes its row afterwards.
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO inbox_notification (notification_id, recipient_id, kind, sender, title, message,"
                       " data, created_at, delivered_at) VALUES ('late', %s, 'offer', '', '', 'm', '{}', now(), now())",
                       [pk])

    assert inbox_services.recipients_erase_due() == 0  # not yet due
    with clock.moved(seconds=inbox_services.ERASE_AGAIN_AFTER.total_seconds()):
        assert inbox_services.recipients_erase_due() == 1

    assert not Notification.objects.filter(recipient_id=pk).exists()
