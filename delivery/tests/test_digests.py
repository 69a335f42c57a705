"""Digests without the broker: folding settled tasks into windows, closing them through the
scheduler's clock, and the one notification each window becomes (delivery/digests.py)."""

from datetime import datetime, timezone

import orjson
import psycopg
import pytest
from django.db import connection

from core import clock
from core.messages import DigestSpec, InvalidPayload, NotificationTask
from core.models import OutboxEvent, ScheduledItem
from delivery import digests
from delivery.models import Delivery, DigestEvent, DigestWindow
from delivery.selectors import notification_trace
from delivery.services import deliveries_settle
from inbox import services as inbox_services
from inbox.factories import RecipientFactory
from inbox.models import Notification, Preference

ACCEPTED = datetime(2026, 11, 22, 6, 0, 0, tzinfo=timezone.utc)
POST = DigestSpec(key="post:42", window_seconds=300)


def _like(i: int, recipient: str = "1", *, digest: DigestSpec | None = POST, kind: str = "like", sender: str = "",
          message: str = "") -> NotificationTask:
    return NotificationTask(notification_id=f"like-{recipient}-{i}", recipient=recipient, kind=kind,
                            sender=sender or f"actor{i}", message=message or f"actor{i} liked your post",
                            data={"post": 42, "i": i}, created_at=ACCEPTED.isoformat(), digest=digest)


def _queued() -> list[NotificationTask]:
    return [NotificationTask.decode(bytes(e.payload)) for e in OutboxEvent.objects.order_by("id")]


def _close_all(seconds: float = 301) -> int:
    with clock.moved(seconds=seconds):
        return digests.digests_close_due(limit=100)


@pytest.mark.django_db
def test_twenty_likes_fold_into_one_window_and_close_as_one_notification():
    RecipientFactory(external_id="1")
    result = deliveries_settle(tasks=[_like(i) for i in range(20)])

    assert result.digested == 20 and result.delivered == 0
    assert not Notification.objects.exists()
    assert set(Delivery.objects.values_list("outcome", "reason")) == {("digested", "into digest post:42")}
    window = DigestWindow.objects.get()
    assert (window.recipient_external_id, window.key, window.kind, window.closed_at) == ("1", "post:42", "like", None)
    assert window.events.count() == 20
    assert notification_trace(notification_id="like-1-3").status == "digested"

    assert digests.digests_close_due(limit=100) == 0  # not due yet
    assert _close_all() == 1
    [digest] = _queued()
    assert (digest.notification_id, digest.recipient, digest.kind, digest.sender) == (
        f"digest:{window.pk}", "1", "like", "actor0")
    assert digest.message == "actor0 and 19 others liked your post"
    summary = digest.data["digest"]
    assert (summary["key"], summary["count"], summary["actor_count"]) == ("post:42", 20, 20)
    assert summary["actors"] == [f"actor{i}" for i in range(20)]
    assert [e["id"] for e in summary["events"]] == [f"like-1-{i}" for i in range(20)]
    assert summary["events"][3]["data"] == {"post": 42, "i": 3}
    assert not ScheduledItem.objects.filter(kind=digests.CLOSE).exists()
    assert DigestWindow.objects.get().closed_at is not None

    # The digest itself is settled like any notification, and is not folded again.
    deliveries_settle(tasks=[digest])
    row = Notification.objects.get()
    assert (row.notification_id, row.message, row.data["digest"]["count"]) == (
        digest.notification_id, "actor0 and 19 others liked your post", 20)
    assert DigestWindow.objects.count() == 1


@pytest.mark.django_db
def test_a_batch_read_again_changes_nothing_and_closing_again_queues_nothing():
    RecipientFactory(external_id="1")
    tasks = [_like(i) for i in range(5)]
    deliveries_settle(tasks=tasks)
    result = deliveries_settle(tasks=tasks)
    assert result.duplicates == 5 and DigestEvent.objects.count() == 5 and DigestWindow.objects.count() == 1
    assert _close_all() == 1 and _close_all() == 0
    assert len(_queued()) == 1


@pytest.mark.django_db
def test_an_event_after_the_close_opens_the_next_window():
    RecipientFactory(external_id="1")
    deliveries_settle(tasks=[_like(0)])
    _close_all()
    with clock.moved(seconds=400):
        deliveries_settle(tasks=[_like(1)])
    windows = list(DigestWindow.objects.order_by("id"))
    assert [w.closed_at is None for w in windows] == [False, True]
    assert [list(w.events.values_list("notification_id", flat=True)) for w in windows] == [["like-1-0"], ["like-1-1"]]
    assert _queued()[0].message == "actor0 liked your post"


@pytest.mark.django_db
def test_keys_and_recipients_have_windows_of_their_own_and_the_sentence_counts_distinct_actors():
    RecipientFactory(external_id="1")
    RecipientFactory(external_id="2")
    other = DigestSpec(key="post:43", window_seconds=60)
    deliveries_settle(tasks=[_like(0, sender="tito"), _like(1, sender="tito"), _like(2, sender="ana"),
                             _like(3, digest=other), _like(4, recipient="2")])
    assert DigestWindow.objects.count() == 3
    assert _close_all() == 3
    by_key = {(t.recipient, t.data["digest"]["key"]): t for t in _queued()}
    assert by_key[("1", "post:42")].message == "tito and ana liked your post"
    assert by_key[("1", "post:42")].data["digest"]["count"] == 3
    assert by_key[("1", "post:43")].message == "actor3 liked your post"
    assert by_key[("2", "post:42")].data["digest"]["count"] == 1


@pytest.mark.django_db
def test_urgent_and_opted_out_notifications_are_not_folded_and_a_kind_can_digest_by_default():
    RecipientFactory(external_id="1")
    inbox_services.kind_register(name="pager", urgent=True)
    inbox_services.kind_register(name="comment", digest_window_seconds=60)
    deliveries_settle(tasks=[
        _like(0, kind="pager"),                 # urgent: delivered at once, digest or not
        _like(1, kind="comment", digest=None),  # the kind's default digest, keyed by its name
        _like(2, digest=None),                  # no digest at all
    ])
    assert set(Notification.objects.values_list("notification_id", flat=True)) == {"like-1-0", "like-1-2"}
    assert DigestWindow.objects.get().key == "comment"

    Preference.objects.create(recipient_id=Notification.objects.first().recipient_id, kinds={"like": False})
    deliveries_settle(tasks=[_like(3)])
    assert Delivery.objects.get(notification_id="like-1-3").reason == "opted out of like"
    assert DigestWindow.objects.count() == 1


@pytest.mark.django_db
def test_a_template_says_the_digest_in_the_recipients_locale():
    RecipientFactory(external_id="1", locale="de")
    inbox_services.template_create(kind="like", channel="in_app", locale="", title="", body="{{ count }} likes")
    inbox_services.template_create(kind="like", channel="in_app", locale="de", title="",
                                   body="{{ actors | first }} und {{ count | minus: 1 }} weitere mögen deinen Beitrag")
    deliveries_settle(tasks=[_like(i) for i in range(4)])
    _close_all()
    [digest] = _queued()
    assert digest.message == ""  # rendered by the worker, in each recipient's locale
    deliveries_settle(tasks=[digest])
    assert Notification.objects.get().message == "actor0 und 3 weitere mögen deinen Beitrag"


@pytest.mark.django_db
def test_many_events_list_the_first_ones_and_count_them_all():
    RecipientFactory(external_id="1")
    deliveries_settle(tasks=[_like(i, sender=f"a{i % 60}") for i in range(130)])
    _close_all()
    summary = _queued()[0].data["digest"]
    assert (summary["count"], summary["actor_count"]) == (130, 60)
    assert len(summary["events"]) == digests.LISTED_EVENTS and len(summary["actors"]) == digests.LISTED_ACTORS
    assert summary["actors"][:3] == ["a0", "a1", "a2"]


@pytest.mark.django_db(transaction=True)
def test_a_window_being_folded_into_is_closed_on_the_next_pass_with_that_event():
    """The close never waits for a fold and never loses its event: it skips the locked window, and
    its scheduler item stays due."""
    RecipientFactory(external_id="1")
    deliveries_settle(tasks=[_like(0)])
    window = DigestWindow.objects.get()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params) as other:  # a worker folding the next event, not committed yet
        other.execute(f"SELECT id FROM {DigestWindow._meta.db_table} WHERE id = %s FOR SHARE", [window.pk])
        other.execute(f"INSERT INTO {DigestEvent._meta.db_table} (window_id, notification_id, sender, message, data, "
                      "created_at) VALUES (%s, 'late', 'actor9', '', '{}', now())", [window.pk])
        assert _close_all() == 1  # released, but the window was busy
        assert DigestWindow.objects.get().closed_at is None and not _queued()
        other.commit()
    assert _close_all() == 1
    [digest] = _queued()
    assert digest.data["digest"]["count"] == 2


def test_a_record_with_a_bad_digest_is_not_ours():
    body = orjson.loads(_like(0).encode())
    assert NotificationTask.of_body(body).digest == POST
    for bad in ({"key": "", "window_seconds": 5}, {"key": "k" * 201, "window_seconds": 5}, {"key": "k", "window_seconds": 0},
                {"key": "k", "window_seconds": 7 * 86400 + 1}, {"key": "k", "window_seconds": True},
                {"key": "k", "window_seconds": 5.0}, {"key": "a\x00b", "window_seconds": 5}, "post:42", [1]):
        with pytest.raises(InvalidPayload):
            NotificationTask.of_body(body | {"digest": bad})
    assert b"digest" not in _like(0, digest=None).encode()  # records without one stay as they were


@pytest.mark.parametrize(("actors", "actor_count", "count", "expected"), [
    (["tito"], 1, 1, "tito liked your post"),
    (["tito"], 1, 4, "tito liked your post"),
    (["tito", "ana"], 2, 2, "tito and ana liked your post"),
    (["tito", "ana", "bo"], 3, 3, "tito and 2 others liked your post"),
    ([], 0, 2, "You have 2 new like notifications"),
])
def test_the_built_in_sentence(actors, actor_count, count, expected):
    assert digests.digest_sentence(kind="like", actors=actors, actor_count=actor_count, count=count) == expected
    assert digests.digest_sentence(kind="review", actors=["tito"], actor_count=1, count=3) == \
        "tito sent you 3 review notifications"


@pytest.mark.django_db
def test_a_digest_of_a_recipient_deleted_meanwhile_is_skipped_and_does_not_bring_it_back():
    RecipientFactory(external_id="1")
    deliveries_settle(tasks=[_like(0), _like(1)])
    inbox_services.recipient_delete(recipient=inbox_services.Recipient.objects.get(external_id="1"))
    _close_all()
    [digest] = _queued()
    result = deliveries_settle(tasks=[digest])
    assert result.skipped == 1 and not Notification.objects.exists()
    assert not inbox_services.Recipient.objects.filter(external_id="1").exists()
    assert Delivery.objects.get(notification_id=digest.notification_id).reason == "recipient deleted"


@pytest.mark.django_db
def test_kinds_that_share_a_key_are_digests_of_their_own_each_in_its_words():
    RecipientFactory(external_id="1")
    deliveries_settle(tasks=[_like(0), _like(1, kind="follow"), _like(2)])
    assert DigestWindow.objects.count() == 2
    _close_all()
    assert sorted(t.message for t in _queued()) == ["actor0 and actor2 liked your post", "actor1 followed you"]


@pytest.mark.django_db
def test_a_digest_of_big_events_stays_small():
    RecipientFactory(external_id="1")
    big = {"blob": "x" * 15_000}
    deliveries_settle(tasks=[NotificationTask(notification_id=f"big-{i}", recipient="1", kind="like", sender=f"a{i}",
                                              message="m" * 2000, data=big, created_at=ACCEPTED.isoformat(), digest=POST)
                             for i in range(20)])
    _close_all()
    [digest] = _queued()
    events = digest.data["digest"]["events"]
    assert len(events) == 20 and events[0]["data"] == big and events[-1] == {
        "id": "big-19", "actor": "a19", "message": "", "data": {}, "created_at": ACCEPTED.isoformat(), "truncated": True}
    assert events[1]["truncated"] and len(digest.encode()) < 40_000


@pytest.mark.django_db
def test_a_close_item_not_in_our_form_is_dropped_and_holds_up_no_window():
    RecipientFactory(external_id="1")
    deliveries_settle(tasks=[_like(0)])
    for key, payload in [("digest:x", {"window": "12; DROP"}), ("digest:y", {}), ("digest:z", {"window": [1]})]:
        ScheduledItem.objects.create(kind=digests.CLOSE, key=key, due_at=ACCEPTED, payload=payload)
    assert _close_all() == 4
    assert len(_queued()) == 1 and not ScheduledItem.objects.filter(kind=digests.CLOSE).exists()


@pytest.mark.django_db
def test_a_digest_capped_on_every_channel_is_carried_into_the_next_one_never_dropped():
    """Issue 15: a delivery over a cap is folded into the next digest when it has one."""
    from delivery import caps

    RecipientFactory(external_id="1", email="")  # in-app only
    caps.frequency_cap_create(channel="in_app", kind="like", max=1, per_seconds=3600)
    deliveries_settle(tasks=[_like(0, sender="someone", digest=None)])  # uses up the cap (in the inbox)
    deliveries_settle(tasks=[_like(i) for i in range(1, 4)])
    _close_all()
    [first] = _queued()

    result = deliveries_settle(tasks=[first])  # over the cap: not delivered, not dropped
    assert result.digested == 1 and result.skipped == 0
    assert Delivery.objects.get(notification_id=first.notification_id).reason == "capped: into the next digest"
    assert notification_trace(notification_id=first.notification_id).status == "digested"
    assert not Notification.objects.filter(notification_id=first.notification_id).exists()
    closed, carried = DigestWindow.objects.order_by("id")
    assert closed.events.count() == 0 and carried.closed_at is None
    assert sorted(carried.events.values_list("notification_id", flat=True)) == ["like-1-1", "like-1-2", "like-1-3"]
    assert carried.closes_at - carried.opened_at == closed.closes_at - closed.opened_at  # as long as the one closed

    deliveries_settle(tasks=[first])  # read again (a redelivery): the ledger drops it, nothing moves twice
    assert DigestWindow.objects.count() == 2 and carried.events.count() == 3
    with clock.moved(seconds=3700):  # the cap's hour has passed when the next one closes
        deliveries_settle(tasks=[_like(4)])  # folded into the carried window
        assert digests.digests_close_due(limit=100) == 1
        second = _queued()[-1]
        assert second.notification_id == f"digest:{carried.pk}"
        assert second.data["digest"]["count"] == 4 and second.message == "actor1 and 3 others liked your post"
        deliveries_settle(tasks=[second])
    assert Notification.objects.filter(notification_id=second.notification_id).exists()


@pytest.mark.django_db
def test_a_digest_capped_on_one_channel_only_is_delivered_on_the_others(settings):
    from delivery import caps
    from delivery.models import ChannelDelivery

    settings.PUSH_GATEWAY_URL = "https://push.example.com/in"
    RecipientFactory(external_id="1")
    caps.frequency_cap_create(channel="webhook", kind="like", max=1, per_seconds=3600)
    deliveries_settle(tasks=[_like(0, sender="someone", digest=None)])  # its webhook uses up the cap
    deliveries_settle(tasks=[_like(1)])
    _close_all()
    [digest] = _queued()
    deliveries_settle(tasks=[digest])
    assert Delivery.objects.get(notification_id=digest.notification_id).outcome == "delivered"
    assert Notification.objects.filter(notification_id=digest.notification_id).exists()
    assert ChannelDelivery.objects.get(notification_id=digest.notification_id, channel="webhook").status == "skipped"
    assert DigestWindow.objects.count() == 1  # nothing carried: the in-app digest told them


@pytest.mark.django_db
def test_a_notification_to_a_topic_is_folded_into_each_subscribers_digest_of_its_kind():
    """Issue 14: a topic's notification is settled "with preferences, templates and digests as usual":
    a kind that digests by default folds each subscriber's, and the campaign counts them delivered."""
    from campaigns.factories import CampaignFactory
    from campaigns.models import Campaign
    from core.messages import CampaignChunk
    from inbox.models import NotificationKind

    NotificationKind.objects.create(name="cheer", digest_window_seconds=300)
    for ext in ("s1", "s2", "s3"):
        RecipientFactory(external_id=ext, email="")
    topic = CampaignFactory(kind="cheer", sender="tito", title="", body="tito cheered post 42", data={"post": 42},
                            segment={"type": "TOPIC", "key": "post:42"}, status="dispatched", targeted=3)
    deliveries_settle(tasks=[_like(1, recipient="s1", kind="cheer", sender="ana", digest=None)])  # opens s1's window

    result = deliveries_settle(chunks=[(CampaignChunk(topic.id, ("s1", "s2", "s3")), None)])
    assert result.digested == 3 and not Notification.objects.filter(campaign_id=topic.id).exists()
    assert Campaign.objects.get(id=topic.id).status == "completed"  # folded counts as delivered
    assert DigestWindow.objects.count() == 3
    assert _close_all() == 3
    by_recipient = {task.recipient: task for task in _queued()}
    assert by_recipient["s1"].message == "ana and tito sent you 2 cheer notifications"
    assert by_recipient["s1"].data["digest"]["events"][1]["id"] == f"{topic.id}:s1"
    assert by_recipient["s2"].data["digest"]["events"][0]["message"] == "tito cheered post 42"
    assert by_recipient["s2"].data["digest"]["actors"] == ["tito"]

    plain = CampaignFactory(kind="offer", status="dispatched", targeted=1)  # campaigns are never folded
    deliveries_settle(chunks=[(CampaignChunk(plain.id, ("s2",)), None)])
    assert Notification.objects.filter(notification_id=f"{plain.id}:s2").exists()
