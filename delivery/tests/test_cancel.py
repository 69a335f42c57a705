"""DELETE /api/v1/notifications/<id>/: cancels a notification held until its send_at (or delay), until it
is released; never both cancelled and released, whichever of the two comes first."""

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection

from core import clock, scheduler, topics
from core.messages import NotificationTask
from core.models import OutboxEvent, ScheduledItem
from delivery import services
from delivery.models import Delivery
from inbox import services as inbox_services

URL = "/api/v1/notifications/{}/"


def _send(client, **fields) -> str:
    body = {"sender": "s", "recipient": "r", "kind": "like", "message": "hi", **fields}
    answer = client.post("/api/v1/notifications/", body, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def _queued_ids() -> list[str]:
    return [NotificationTask.decode(bytes(p)).notification_id
            for p in OutboxEvent.objects.filter(topic=topics.SEND.logical).values_list("payload", flat=True)]


def _settle_queued() -> None:
    """What the worker does with the tasks in the outbox."""
    services.deliveries_settle(tasks=[NotificationTask.decode(bytes(p)) for p in
                                      OutboxEvent.objects.filter(topic=topics.SEND.logical).values_list("payload", flat=True)])


@pytest.mark.django_db
def test_a_held_notification_is_cancelled_and_never_released(service_client):
    notification_id = _send(service_client, delay_seconds=60)
    kept = _send(service_client, delay_seconds=60)

    answer = service_client.delete(URL.format(notification_id))

    assert answer.status_code == 204 and answer.content == b""
    trace = service_client.get(URL.format(notification_id)).json()
    assert (trace["status"], trace["reason"], trace["recipient"], trace["in_app"]) == ("cancelled", "cancelled", "r", None)
    assert Delivery.objects.get(notification_id=notification_id).outcome == "skipped"
    with clock.moved(seconds=120):
        assert inbox_services.notifications_release_due() == 1  # the other one only
    assert _queued_ids() == [kept]
    assert service_client.delete(URL.format(notification_id)).status_code == 204  # cancelled already: the same answer


@pytest.mark.django_db
def test_a_notification_with_a_send_at_is_cancelled_too(service_client):
    notification_id = _send(service_client, send_at=(clock.now() + timedelta(days=3)).isoformat())
    assert service_client.delete(URL.format(notification_id)).status_code == 204
    assert not ScheduledItem.objects.exists()


@pytest.mark.django_db
def test_once_released_it_is_a_409(service_client):
    notification_id = _send(service_client, delay_seconds=5)
    with clock.moved(seconds=6):
        assert inbox_services.notifications_release_due() == 1

    queued = service_client.delete(URL.format(notification_id))
    assert queued.status_code == 409, queued.content
    assert "accepted" in queued.json()["detail"]

    _settle_queued()
    delivered = service_client.delete(URL.format(notification_id))
    assert delivered.status_code == 409 and "delivered" in delivered.json()["detail"]
    assert service_client.get(URL.format(notification_id)).json()["status"] == "delivered"


@pytest.mark.django_db
def test_a_notification_never_held_is_a_409(service_client):
    notification_id = _send(service_client)
    assert service_client.delete(URL.format(notification_id)).status_code == 409
    assert _queued_ids() == [notification_id]


@pytest.mark.django_db
@pytest.mark.parametrize("notification_id", ["3f0c2a6e-8a51-4b2f-9d4e-2b1f0f5d7a10", "nothing", "9:nobody", "x" * 160])
def test_an_unknown_id_is_a_404(service_client, notification_id):
    answer = service_client.delete(URL.format(notification_id))
    assert answer.status_code == 404 and answer.json()["detail"]
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_an_id_over_160_characters_is_a_400(service_client):
    assert service_client.delete(URL.format("x" * 161)).status_code == 400


@pytest.mark.django_db
def test_cancelling_needs_a_service_token(service_client, anonymous_client):
    notification_id = _send(service_client, delay_seconds=60)
    assert anonymous_client.delete(URL.format(notification_id)).status_code == 401
    assert ScheduledItem.objects.count() == 1


# --- Races with the release, on two connections ---------------------------------------------------


def _in_thread(target) -> tuple[threading.Thread, dict]:
    """Run `target` on a thread of its own (its own database connection); its result or error in the dict."""
    out: dict = {}

    def run():
        try:
            out["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _held_tasks(n: int) -> list[str]:
    tasks = [NotificationTask(notification_id=f"race-{i}", recipient=f"u{i}", kind="like", sender="s", message="m",
                              created_at=clock.now().isoformat()) for i in range(n)]
    scheduler.schedule(*(inbox_services.held_item(t, send_at=clock.now() + timedelta(seconds=30)) for t in tasks))
    return [t.notification_id for t in tasks]


@pytest.mark.django_db(transaction=True)
def test_a_cancel_during_the_release_waits_for_it_and_is_a_409(service_client, monkeypatch):
    [notification_id] = _held_tasks(1)
    claimed, go_on = threading.Event(), threading.Event()
    enqueue = inbox_services.outbox_enqueue_keyed

    def slow_enqueue(**kwargs):  # inside the release's transaction: its item taken (row locked, deleted)
        claimed.set()
        assert go_on.wait(10)
        return enqueue(**kwargs)

    monkeypatch.setattr(inbox_services, "outbox_enqueue_keyed", slow_enqueue)
    with clock.moved(seconds=31):
        release, released = _in_thread(lambda: inbox_services.notifications_release_due())
        assert claimed.wait(10)
        cancel, cancelled = _in_thread(lambda: services.notification_cancel(notification_id=notification_id))
        cancel.join(0.5)
        assert cancel.is_alive()  # waiting for the release's row lock
        go_on.set()
        release.join(10)
        cancel.join(10)
    assert released == {"result": 1} and cancelled == {"result": False}
    assert _queued_ids() == [notification_id] and not Delivery.objects.exists()
    assert service_client.delete(URL.format(notification_id)).status_code == 409


@pytest.mark.django_db(transaction=True)
def test_a_release_during_a_cancel_skips_it_and_it_stays_cancelled(service_client, monkeypatch):
    [notification_id, other] = _held_tasks(2)
    deleted, go_on = threading.Event(), threading.Event()
    claim = services._ledger_claim

    def slow_claim(**kwargs):  # inside the cancel's transaction, after its DELETE
        deleted.set()
        assert go_on.wait(10)
        return claim(**kwargs)

    monkeypatch.setattr(services, "_ledger_claim", slow_claim)
    with clock.moved(seconds=31):
        cancel, cancelled = _in_thread(lambda: services.notification_cancel(notification_id=notification_id))
        assert deleted.wait(10)
        release, released = _in_thread(lambda: inbox_services.notifications_release_due())
        release.join(10)
        assert released == {"result": 1}  # the other one: the cancelled item is locked, so skipped
        go_on.set()
        cancel.join(10)
        assert inbox_services.notifications_release_due() == 0
    assert cancelled == {"result": True}
    assert _queued_ids() == [other]
    assert service_client.get(URL.format(notification_id)).json()["status"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_cancels_racing_releases_each_end_one_way_only():
    """200 held notifications, released by two threads while a third cancels them in random order:
    each is either queued once (and its cancel said no) or cancelled (and never queued)."""
    ids = _held_tasks(200)
    order = random.sample(ids, len(ids))

    def release_all():
        total = 0
        with clock.moved(seconds=31):  # (the clock is the process's: the cancels do not read it)
            while released := inbox_services.notifications_release_due(limit=7):
                total += released
        return total

    def cancel_all():
        return {i: services.notification_cancel(notification_id=i) for i in order}

    threads = [_in_thread(release_all), _in_thread(release_all), _in_thread(cancel_all)]
    for thread, _ in threads:
        thread.join(60)
    outcomes = [out for _, out in threads]
    assert all("error" not in out for out in outcomes), outcomes
    answers = outcomes[2]["result"]
    queued = _queued_ids()
    cancelled = set(Delivery.objects.filter(reason=services.CANCELLED).values_list("notification_id", flat=True))
    assert len(queued) == len(set(queued)) == outcomes[0]["result"] + outcomes[1]["result"]
    assert set(queued) | cancelled == set(ids) and not set(queued) & cancelled
    assert cancelled == {i for i, ok in answers.items() if ok}
    assert not ScheduledItem.objects.exists()
