"""POST /api/v1/notifications/ with `send_at`: held by the scheduler, released once when due."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from core import clock, topics
from core.messages import NotificationTask
from core.models import DeadLetter, OutboxEvent, ScheduledItem
from inbox import services

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/"


def _post(client, **fields):
    return client.post(URL, {"sender": "s", "recipient": "r", "kind": "like", "message": "later", **fields}, format="json")


def _queued_ids() -> list[str]:
    return [NotificationTask.decode(bytes(e.payload)).notification_id for e in OutboxEvent.objects.filter(topic=topics.SEND.logical).order_by("id")]


def _metric(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


def test_a_future_send_at_is_held_then_released_once_when_due(service_client, django_capture_on_commit_callbacks):
    send_at = timezone.now() + timedelta(hours=2)
    scheduled, released = _metric("notifications_scheduled_total"), _metric("notifications_released_total")
    with django_capture_on_commit_callbacks(execute=True):
        answer = _post(service_client, send_at=send_at.isoformat())
    assert _metric("notifications_scheduled_total") == scheduled + 1
    assert answer.status_code == 202
    assert answer.json() == {"id": answer.json()["id"], "status": "scheduled"}
    notification_id = answer.json()["id"]
    assert _queued_ids() == []
    [held] = ScheduledItem.objects.all()
    assert (held.kind, held.due_at) == (services.RELEASE, send_at)

    trace = service_client.get(f"{URL}{notification_id}/").json()
    assert (trace["status"], trace["recipient"], trace["reason"]) == ("scheduled", "r", f"held until {send_at.isoformat()}")

    assert services.notifications_release_due() == 0  # not yet
    with clock.moved(hours=2):
        assert services.notifications_release_due() == 1
        assert services.notifications_release_due() == 0
    assert _queued_ids() == [notification_id]
    assert not ScheduledItem.objects.exists()
    assert _metric("notifications_released_total") == released + 1


def test_a_release_that_fails_queues_nothing_and_is_released_again(service_client, monkeypatch):
    _post(service_client, send_at=(timezone.now() + timedelta(minutes=1)).isoformat())

    queue = services.outbox_enqueue_keyed

    def broken(**records):  # the process dies after taking the item and queueing the task, before the commit
        queue(**records)
        raise RuntimeError("killed")

    monkeypatch.setattr(services, "outbox_enqueue_keyed", broken)
    with clock.moved(minutes=2), pytest.raises(RuntimeError), transaction.atomic():
        services.notifications_release_due()
    assert ScheduledItem.objects.count() == 1 and _queued_ids() == []
    monkeypatch.undo()
    with clock.moved(minutes=2):
        assert services.notifications_release_due() == 1


def test_a_send_at_a_little_past_or_null_is_queued_at_once(service_client):
    """A little in the past is clock skew (up to a day): sent now, not refused."""
    answers = [_post(service_client, send_at=(timezone.now() - timedelta(hours=23)).isoformat()),
               _post(service_client, send_at=(timezone.now() - timedelta(seconds=2)).isoformat()),
               _post(service_client, send_at=None)]
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(202, "accepted")] * 3
    assert sorted(_queued_ids()) == sorted(a.json()["id"] for a in answers)
    assert not ScheduledItem.objects.exists()


def test_a_send_at_more_than_a_day_past_is_a_400(service_client):
    answer = _post(service_client, send_at=(timezone.now() - timedelta(days=1, minutes=1)).isoformat())
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == ["send_at"] and "day in the past" in answer.json()["send_at"][0]
    assert not ScheduledItem.objects.exists() and _queued_ids() == []


@pytest.mark.parametrize("send_at", [
    "tomorrow", "2026-13-01T00:00:00Z", "99999-01-01T00:00:00Z", 1765000000, ["2030-01-01T00:00:00Z"], {"at": 1},
    "\u0000", (timezone.now() + timedelta(days=367)).isoformat(),
    "2030-01-01T00:00:00", "2030-01-01 00:00", True, "",  # without an offset; not a string; empty
])
def test_a_send_at_that_is_not_a_time_within_a_year_is_a_400_and_holds_nothing(service_client, send_at):
    answer = _post(service_client, send_at=send_at)
    assert answer.status_code == 400, answer.content
    assert "send_at" in answer.json()
    assert not ScheduledItem.objects.exists() and _queued_ids() == []


def test_erasing_a_recipient_cancels_its_held_notifications(service_client):
    """Found from outside: a held notification created the erased recipient again when it came due."""
    later = (timezone.now() + timedelta(minutes=5)).isoformat()
    assert service_client.post("/api/v1/recipients/", {"id": "gone"}, format="json").status_code in (200, 201)
    held = _post(service_client, recipient="gone", send_at=later).json()["id"]
    kept = _post(service_client, recipient="stays", send_at=later).json()["id"]

    assert service_client.delete("/api/v1/recipients/gone/").status_code == 204

    with clock.moved(minutes=6):
        assert services.notifications_release_due() == 1
    assert _queued_ids() == [kept]
    assert service_client.get(f"{URL}{held}/").status_code == 404


def test_held_notifications_due_at_the_same_time_are_released_in_the_order_they_were_accepted(service_client):
    """Found from outside: ties on due_at came out in no fixed order (one recipient's order broke)."""
    send_at = (timezone.now() + timedelta(minutes=1)).isoformat()
    accepted = [_post(service_client, message=f"seq {i:02}", send_at=send_at).json()["id"] for i in range(30)]
    with clock.moved(minutes=2):
        assert services.notifications_release_due(limit=7) == 7  # in several batches, as a busy worker would
        while services.notifications_release_due(limit=7):
            pass
    assert _queued_ids() == accepted


def test_a_held_item_that_cannot_be_read_is_dead_lettered_and_holds_up_nothing(service_client):
    send_at = (timezone.now() + timedelta(minutes=1)).isoformat()
    first = _post(service_client, message="first", send_at=send_at).json()["id"]
    ScheduledItem.objects.create(kind=services.RELEASE, key="release:forged", due_at=timezone.now(),
                                 payload={"task": "not a task"})  # never written so by the API
    last = _post(service_client, message="last", send_at=send_at).json()["id"]

    with clock.moved(minutes=2):
        assert services.notifications_release_due() == 3
    assert _queued_ids() == [first, last]
    [letter] = DeadLetter.objects.all()
    assert letter.reason == "invalid payload" and "release:forged" in letter.error
    assert not ScheduledItem.objects.exists()
