"""Frequency caps without the broker: the API (validation, CRUD) and their enforcement when a batch is
settled (delivery/caps.py): sliding windows, kind-specific and every-kind caps, channel-only capping,
campaigns, repeats, and the purge of old events."""

import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.factories import CampaignFactory
from conftest import wait_until
from campaigns.models import Campaign
from core import clock
from core.messages import CampaignChunk, NotificationTask, Origin
from delivery import caps
from delivery.caps import Candidate, CapRule, caps_decide
from delivery.models import CapEvent, CapGuard, ChannelDelivery, Delivery, FrequencyCap
from delivery.retention import retention_purge
from delivery.selectors import notification_trace
from delivery.services import deliveries_settle
from inbox.factories import RecipientFactory
from inbox.models import Notification

pytestmark = pytest.mark.django_db

URL = "/api/v1/frequency-caps/"
ORIGIN = Origin("notifications.send", 0, 7)


def _like(n: int, recipient: str = "1", kind: str = "like") -> NotificationTask:
    return NotificationTask(notification_id=f"{kind}-{recipient}-{n}", recipient=recipient, kind=kind, sender="2",
                            message=f"{kind} {n}", created_at="2026-11-22T06:00:00+00:00")


def _cap(channel="in_app", kind=None, max=3, per_seconds=3600) -> FrequencyCap:  # noqa: A002
    return caps.frequency_cap_create(channel=channel, kind=kind, max=max, per_seconds=per_seconds)


def _outcomes(prefix: str = "") -> dict[str, tuple[str, str]]:
    return {d.notification_id: (d.outcome, d.reason)
            for d in Delivery.objects.filter(notification_id__startswith=prefix).order_by("notification_id")}


def _inbox_ids() -> set[str]:
    return set(Notification.objects.values_list("notification_id", flat=True))


# ---- the API ----

def test_create_list_get_and_delete(service_client):
    response = service_client.post(URL, {"channel": "email", "kind": "offer", "max": 3, "per_seconds": 86400},
                                   format="json")
    assert response.status_code == 201, response.content
    cap = response.json()
    assert {k: cap[k] for k in ("channel", "kind", "max", "per_seconds")} == {
        "channel": "email", "kind": "offer", "max": 3, "per_seconds": 86400}
    second = service_client.post(URL, {"channel": "in_app", "max": 10, "per_seconds": 60}, format="json").json()
    assert second["kind"] is None  # absent: every kind

    listed = service_client.get(URL).json()
    assert [c["id"] for c in listed["results"]] == [second["id"], cap["id"]]
    assert service_client.get(f"{URL}{cap['id']}/").json()["channel"] == "email"

    assert service_client.delete(f"{URL}{cap['id']}/").status_code == 204
    assert list(FrequencyCap.objects.values_list("id", flat=True)) == [second["id"]]
    assert service_client.delete(f"{URL}{cap['id']}/").status_code == 404
    for bad in ("abc", "99999999999999999999999", "-1"):
        assert service_client.delete(f"{URL}{bad}/").status_code == 404
        assert service_client.get(f"{URL}{bad}/").status_code == 404


def test_a_registered_kind_and_null_kind_are_accepted(service_client):
    assert service_client.post("/api/v1/kinds/", {"name": "order.shipped"}, format="json").status_code == 201
    for kind in ("order.shipped", None, "like", "alert"):
        response = service_client.post(URL, {"channel": "webhook", "kind": kind, "max": 1, "per_seconds": 1},
                                       format="json")
        assert response.status_code == 201, (kind, response.content)


@pytest.mark.parametrize(("body", "field"), [
    ({"max": 0}, "max"),
    ({"max": -1}, "max"),
    ({"max": "3"}, "max"),
    ({"max": True}, "max"),
    ({"max": 3.0}, "max"),
    ({"max": 3.5}, "max"),
    ({"max": None}, "max"),
    ({"max": 10_001}, "max"),
    ({"max": 2 ** 40}, "max"),
    ({"max": [3]}, "max"),
    ({"per_seconds": 0}, "per_seconds"),
    ({"per_seconds": -5}, "per_seconds"),
    ({"per_seconds": 30 * 86400 + 1}, "per_seconds"),
    ({"per_seconds": "60"}, "per_seconds"),
    ({"per_seconds": False}, "per_seconds"),
    ({"channel": "sms"}, "channel"),
    ({"channel": ""}, "channel"),
    ({"channel": None}, "channel"),
    ({"channel": ["email"]}, "channel"),
    ({"kind": "nope"}, "kind"),
    ({"kind": ""}, "kind"),
    ({"kind": "LIKE"}, "kind"),
    ({"kind": "x" * 65}, "kind"),
    ({"kind": 5}, "kind"),
])
def test_bad_input_is_a_400_naming_the_field(service_client, body, field):
    good = {"channel": "email", "kind": None, "max": 3, "per_seconds": 86400}
    response = service_client.post(URL, {**good, **body}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not FrequencyCap.objects.exists()


@pytest.mark.parametrize("missing", ["channel", "max", "per_seconds"])
def test_a_missing_field_is_a_400_naming_it(service_client, missing):
    body = {"channel": "email", "max": 3, "per_seconds": 86400}
    del body[missing]
    response = service_client.post(URL, body, format="json")
    assert response.status_code == 400 and missing in response.json()


def test_hostile_bodies(service_client):
    assert service_client.post(URL, {"channel": "email", "max": 10 ** 30, "per_seconds": 60},
                               format="json").status_code == 400
    assert service_client.post(URL, "[1, 2]", content_type="application/json").status_code == 400
    assert service_client.post(URL, '{"channel": "in_\\u0000app", "max": 1, "per_seconds": 1}',
                               content_type="application/json").status_code == 400
    # JSON only: a form's numbers would be strings.
    assert service_client.post(URL, {"channel": "email", "max": "3", "per_seconds": "60"}).status_code == 415
    assert not FrequencyCap.objects.exists()


def test_only_services(anonymous_client, service_client):
    cap = _cap()
    assert anonymous_client.get(URL).status_code == 401
    assert anonymous_client.post(URL, {"channel": "email", "max": 3, "per_seconds": 60}, format="json").status_code == 401
    assert anonymous_client.delete(f"{URL}{cap.id}/").status_code == 401
    token = service_client.post("/api/v1/recipients/1/tokens/").json()["token"]
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert anonymous_client.get(URL).status_code == 403
    assert anonymous_client.delete(f"{URL}{cap.id}/").status_code == 403
    assert FrequencyCap.objects.count() == 1


# ---- the decision (pure) ----

def test_decide_walks_the_candidates_in_order_across_caps():
    rules = [CapRule(1, "in_app", "like", 2, 60), CapRule(2, "in_app", None, 3, 60), CapRule(3, "email", None, 1, 60)]
    c = [Candidate(f"n{i}", "r", ch, kind) for i, (ch, kind) in enumerate(
        [("in_app", "like"), ("in_app", "like"), ("in_app", "like"), ("in_app", "follow"), ("in_app", "follow"),
         ("email", "like"), ("email", "like")])]
    through, capped = caps_decide(candidates=c, rules=rules, counts={})
    # like 3 is over the like cap (and so does not count for the every-kind cap): follow 1 fits, follow 2 not
    assert [x.notification_id for x in through] == ["n0", "n1", "n3", "n5"]
    assert [x.notification_id for x in capped] == ["n2", "n4", "n6"]
    through, capped = caps_decide(candidates=c[:1], rules=rules, counts={("r", "in_app", 2): 3})
    assert (through, capped) == ([], c[:1])
    through, _ = caps_decide(candidates=c[:1], rules=rules, counts={("other", "in_app", 2): 3})
    assert through == c[:1]  # another recipient's count


# ---- enforcement ----

def test_a_cap_of_3_in_app_likes_an_hour_5_sent_3_delivered_2_capped():
    _cap(kind="like")
    result = deliveries_settle(tasks=[_like(n) for n in range(5)])

    assert (result.delivered, result.skipped) == (3, 2)
    assert _inbox_ids() == {"like-1-0", "like-1-1", "like-1-2"}
    assert _outcomes() == {
        **{f"like-1-{n}": ("delivered", "") for n in range(3)},
        **{f"like-1-{n}": ("skipped", "capped") for n in (3, 4)}}
    assert notification_trace(notification_id="like-1-4").status == "skipped"
    assert notification_trace(notification_id="like-1-4").reason == "capped"
    assert CapEvent.objects.count() == 3
    assert list(CapGuard.objects.values_list("recipient_external_id", "channel")) == [("1", "in_app")]

    # Later batches see the window: still capped; another recipient is not.
    deliveries_settle(tasks=[_like(5), _like(0, recipient="2")])
    assert _outcomes("like-1-5")["like-1-5"] == ("skipped", "capped")
    assert "like-2-0" in _inbox_ids()

    # The window slides: an hour after the first three, they no longer count.
    with clock.moved(seconds=3599):
        deliveries_settle(tasks=[_like(6)])
        assert _outcomes("like-1-6")["like-1-6"] == ("skipped", "capped")
    with clock.moved(seconds=3601):
        deliveries_settle(tasks=[_like(n) for n in range(7, 11)])
    assert _inbox_ids() >= {"like-1-7", "like-1-8", "like-1-9"}
    assert _outcomes("like-1-10")["like-1-10"] == ("skipped", "capped")


def test_a_repeat_uses_up_nothing():
    _cap(kind="like", max=2)
    deliveries_settle(tasks=[_like(0)])
    deliveries_settle(tasks=[_like(0), _like(0)])  # redelivered: the ledger drops it
    deliveries_settle(tasks=[_like(1)])
    assert _inbox_ids() == {"like-1-0", "like-1-1"}
    assert CapEvent.objects.count() == 2


def test_a_kind_cap_leaves_other_kinds_and_an_every_kind_cap_counts_them_all():
    _cap(kind="like", max=1)
    deliveries_settle(tasks=[_like(0), _like(1), _like(0, kind="follow"), _like(1, kind="follow")])
    assert _inbox_ids() == {"like-1-0", "follow-1-0", "follow-1-1"}
    # What a cap counts: the deliveries some cap matched when they were made (follows were not counted).
    assert CapEvent.objects.count() == 1

    _cap(kind=None, max=4)  # every kind, from now on: the like above counts
    deliveries_settle(tasks=[_like(n, kind="mention") for n in range(4)] + [_like(2)])
    assert _outcomes("mention") == {"mention-1-0": ("delivered", ""), "mention-1-1": ("delivered", ""),
                                    "mention-1-2": ("delivered", ""), "mention-1-3": ("skipped", "capped")}
    assert _outcomes("like-1-2")["like-1-2"] == ("skipped", "capped")


def test_a_capped_channel_alone_is_left_out_and_recorded(settings):
    settings.PUSH_GATEWAY_URL = ""
    RecipientFactory(external_id="1", email="one@example.com", push_endpoint="")
    _cap(channel="email", max=1)
    _cap(channel="in_app", max=2)
    deliveries_settle(tasks=[_like(0), _like(1)])

    assert _inbox_ids() == {"like-1-0", "like-1-1"}  # in-app is not capped
    assert _outcomes() == {"like-1-0": ("delivered", ""), "like-1-1": ("delivered", "capped: email")}
    rows = {r.notification_id: (r.channel, r.status, r.last_error) for r in ChannelDelivery.objects.all()}
    assert rows == {"like-1-0": ("email", "pending", ""), "like-1-1": ("email", "skipped", "capped")}
    trace = notification_trace(notification_id="like-1-1")
    assert (trace.status, trace.reason) == ("delivered", "capped: email")
    assert [(c.channel, c.status, c.last_error) for c in trace.channels] == [("email", "skipped", "capped")]

    # Every channel capped: skipped.
    deliveries_settle(tasks=[_like(2)])
    assert _outcomes("like-1-2")["like-1-2"] == ("skipped", "capped")
    assert ChannelDelivery.objects.get(notification_id="like-1-2").status == "skipped"


def test_a_campaign_counts_and_is_capped_in_its_chunks_set_statement():
    _cap(kind="offer", max=1)
    _cap(kind=None, max=2)
    for r in ("a", "b", "c"):
        RecipientFactory(external_id=r, email="", push_endpoint="")
    deliveries_settle(tasks=[_like(0, recipient="c")])  # a like counts for the every-kind cap
    first = CampaignFactory(status="dispatched", kind="offer")
    second = CampaignFactory(status="dispatched", kind="offer")
    alert = CampaignFactory(status="dispatched", kind="alert")

    deliveries_settle(chunks=[(CampaignChunk(campaign_id=first.id, recipients=("a", "b", "c")), ORIGIN)])
    deliveries_settle(chunks=[(CampaignChunk(campaign_id=second.id, recipients=("a", "b")), ORIGIN)])
    deliveries_settle(chunks=[(CampaignChunk(campaign_id=alert.id, recipients=("a", "c")), ORIGIN)])

    assert _inbox_ids() == {"like-c-0", f"{first.id}:a", f"{first.id}:b", f"{first.id}:c", f"{alert.id}:a"}
    assert Delivery.objects.get(notification_id=f"{second.id}:a").reason == "capped"
    assert Delivery.objects.get(notification_id=f"{alert.id}:c").reason == "capped"  # like + offer = 2
    counts = {c.id: (c.delivered, c.skipped) for c in Campaign.objects.all()}
    assert counts == {first.id: (3, 0), second.id: (0, 2), alert.id: (1, 1)}
    # The set statement settled them: no ledger row for the delivered ones (their inbox row is it).
    assert not Delivery.objects.filter(notification_id=f"{first.id}:a").exists()
    assert CapEvent.objects.count() == 5
    assert notification_trace(notification_id=f"{second.id}:b").reason == "capped"

    # A repeat of a chunk (redelivered) changes nothing, capped or not.
    again = deliveries_settle(chunks=[(CampaignChunk(campaign_id=second.id, recipients=("a", "b")), ORIGIN),
                                      (CampaignChunk(campaign_id=first.id, recipients=("a", "b", "c")), ORIGIN)])
    assert (again.delivered, again.skipped, again.duplicates) == (0, 0, 5)
    assert CapEvent.objects.count() == 5
    assert {c.id: (c.delivered, c.skipped) for c in Campaign.objects.all()} == counts


def test_a_chunk_with_a_recipient_twice_and_one_with_an_address():
    RecipientFactory(external_id="a", email="", push_endpoint="")
    RecipientFactory(external_id="e", email="e@example.com", push_endpoint="")
    _cap(kind="offer", max=1)
    campaign = CampaignFactory(status="dispatched", kind="offer")
    result = deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("a", "e", "a")), ORIGIN)])
    assert (result.delivered, result.skipped, result.duplicates) == (2, 0, 1)
    assert CapEvent.objects.count() == 2  # a's in the set statement, e's through the tasks' path
    later = CampaignFactory(status="dispatched", kind="offer")
    result = deliveries_settle(chunks=[(CampaignChunk(campaign_id=later.id, recipients=("a", "e", "a")), ORIGIN)])
    assert (result.delivered, result.skipped, result.duplicates) == (1, 1, 1)  # e's email is not capped
    assert _outcomes(f"{later.id}:") == {f"{later.id}:a": ("skipped", "capped"),
                                         f"{later.id}:e": ("delivered", "capped: in_app")}
    assert ChannelDelivery.objects.get(notification_id=f"{later.id}:e").status == "pending"
    assert not Notification.objects.filter(notification_id__startswith=f"{later.id}:").exists()


def test_without_caps_nothing_is_counted_and_the_chunk_is_one_statement():
    campaign = CampaignFactory(status="dispatched", kind="offer")
    for r in ("a", "b"):
        RecipientFactory(external_id=r, email="", push_endpoint="")
    deliveries_settle(tasks=[_like(0)])
    deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("a", "b")), ORIGIN)])
    assert not Delivery.objects.filter(campaign_id=campaign.id).exists()  # the fast path: no ledger rows
    assert not CapEvent.objects.exists() and not CapGuard.objects.exists()

    # A cap on another channel, or on another kind, leaves the fast path and the batch's queries alone.
    _cap(channel="email", kind="offer")
    _cap(channel="in_app", kind="like")
    other = CampaignFactory(status="dispatched", kind="offer")
    with CaptureQueriesContext(connection) as queries:
        deliveries_settle(chunks=[(CampaignChunk(campaign_id=other.id, recipients=("a", "b")), ORIGIN)])
    assert not Delivery.objects.filter(campaign_id=other.id).exists()
    assert not any("capevent" in q["sql"].lower() for q in queries.captured_queries)


def test_caps_are_read_once_in_a_while():
    caps.caps_forget()
    assert caps.caps_active() == ()
    FrequencyCap.objects.create(channel="in_app", kind=None, max=1, per_seconds=60)  # behind the service's back
    assert caps.caps_active() == ()  # remembered
    caps.caps_forget()
    assert len(caps.caps_active()) == 1


def test_retention_purges_events_older_than_the_longest_window():
    _cap(kind="like", max=100, per_seconds=60)
    _cap(channel="email", max=100, per_seconds=600)
    deliveries_settle(tasks=[_like(0)])
    assert CapEvent.objects.count() == 1 and CapGuard.objects.count() == 1
    purged = retention_purge(now=clock.now() + timedelta(seconds=599))
    assert purged.deleted["cap events"] == 0 and CapEvent.objects.count() == 1
    purged = retention_purge(now=clock.now() + timedelta(seconds=601))
    assert (purged.deleted["cap events"], purged.deleted["cap guards"]) == (1, 1)
    assert not CapEvent.objects.exists() and not CapGuard.objects.exists()
    deliveries_settle(tasks=[_like(1)])  # the guard comes back
    assert CapGuard.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch", ["tasks", "chunk"])
def test_two_workers_at_once_take_turns_and_the_second_counts_the_firsts_deliveries(batch):
    """A rebalance: another worker (a second connection) is settling likes for the same recipient and
    holds its guard row with 2 deliveries written and not committed. Our batch (2 likes, or a campaign
    chunk: its set statement) waits for its commit, then counts its 2: with a cap of 3, one of our
    likes goes through; with a cap of 2 on every kind, the campaign's is capped."""
    _cap(kind="like", max=3)
    _cap(kind=None, max=2 if batch == "chunk" else 100)
    RecipientFactory(external_id="1", email="", push_endpoint="")
    campaign = CampaignFactory(status="dispatched", kind="offer")
    now = clock.now()
    # The guard row exists and was used a moment ago: the other worker's upsert locks it without
    # writing it (its ON CONFLICT's WHERE is false), which must still make ours wait.
    CapGuard.objects.create(recipient_external_id="1", channel="in_app", used_at=now)
    other = psycopg.connect(**connection.get_connection_params())
    try:
        updated = other.execute(
            f"INSERT INTO {CapGuard._meta.db_table} (recipient_external_id, channel, used_at) "
            "VALUES ('1', 'in_app', %s) ON CONFLICT (recipient_external_id, channel) "
            f"DO UPDATE SET used_at = EXCLUDED.used_at {caps._GUARD_STALE}", [now]).rowcount
        assert updated == 0
        for n in range(2):
            other.execute(f"INSERT INTO {CapEvent._meta.db_table} (recipient_external_id, channel, kind, at, "
                          "notification_id) VALUES ('1', 'in_app', 'like', %s, %s)", [now, f"other-{n}"])
        done = threading.Event()

        def settle():
            try:
                if batch == "tasks":
                    deliveries_settle(tasks=[_like(0), _like(1)])
                else:
                    deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("1",)), ORIGIN)])
            finally:
                connection.close()
                done.set()

        thread = threading.Thread(target=settle)
        thread.start()
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as watcher:
            wait_until(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                [f"%{CapGuard._meta.db_table}%"]).fetchone()[0] == 1, timeout=10, what="our batch waiting for the guard")
        assert not done.is_set()
        other.commit()
        thread.join(timeout=10)
        assert done.is_set()
    finally:
        other.close()
    if batch == "tasks":
        assert _outcomes("like") == {"like-1-0": ("delivered", ""), "like-1-1": ("skipped", "capped")}
        assert CapEvent.objects.count() == 3
    else:
        assert _outcomes(f"{campaign.id}:") == {f"{campaign.id}:1": ("skipped", "capped")}
        assert CapEvent.objects.count() == 2


def test_the_admin_lists_adds_with_the_apis_checks_and_deletes(client):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True,
                                                             is_superuser=True))
    _cap(channel="email", kind="offer")
    assert client.get("/admin/delivery/frequencycap/").status_code == 200
    assert client.get("/admin/delivery/frequencycap/add/").status_code == 200
    bad = client.post("/admin/delivery/frequencycap/add/", {"channel": "sms", "kind": "nope", "max": 0,
                                                             "per_seconds": 0})
    assert bad.status_code == 200  # the form again, with its errors
    errors = bad.context["adminform"].form.errors
    assert set(errors) == {"channel", "kind", "max", "per_seconds"}
    caps.caps_active()  # remembered (the email cap only)
    good = client.post("/admin/delivery/frequencycap/add/", {"channel": "in_app", "kind": "", "max": 2,
                                                              "per_seconds": 60})
    assert good.status_code == 302
    assert FrequencyCap.objects.filter(channel="in_app", kind=None, max=2).exists()
    assert any(r.channel == "in_app" for r in caps.caps_active())  # forgotten on save: read again


def test_a_campaign_with_templates_of_its_own_is_capped_through_the_tasks_path():
    RecipientFactory(external_id="a", email="", push_endpoint="", locale="de")
    RecipientFactory(external_id="b", email="", push_endpoint="")
    _cap(kind="offer", max=1)
    template = {"channel": "in_app", "locale": "de", "title": "Angebot", "body": "{{ recipient.id }}"}
    first = CampaignFactory(status="dispatched", kind="offer", templates=[template])
    second = CampaignFactory(status="dispatched", kind="offer", templates=[template])
    deliveries_settle(chunks=[(CampaignChunk(campaign_id=first.id, recipients=("a", "b")), ORIGIN)])
    deliveries_settle(chunks=[(CampaignChunk(campaign_id=second.id, recipients=("a", "b")), ORIGIN)])
    assert Notification.objects.get(notification_id=f"{first.id}:a").title == "Angebot"
    assert _outcomes(f"{second.id}:") == {f"{second.id}:a": ("skipped", "capped"), f"{second.id}:b": ("skipped", "capped")}
    assert {c.id: (c.delivered, c.skipped) for c in Campaign.objects.all()} == {first.id: (2, 0), second.id: (0, 2)}
