"""POST /api/v1/notifications/ with `delay_seconds` and `expires_at`: their bounds (a 400 naming the
field, nothing held or queued) and what is held or queued with them."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from core import clock, topics
from core.messages import NotificationTask
from core.models import OutboxEvent, ScheduledItem
from inbox import services

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/"
NINETY_DAYS = 90 * 86400


def _post(client, **fields):
    return client.post(URL, {"sender": "s", "recipient": "r", "kind": "like", "message": "later", **fields}, format="json")


def _queued() -> list[NotificationTask]:
    return [NotificationTask.decode(bytes(e.payload)) for e in OutboxEvent.objects.filter(topic=topics.SEND.logical)]


def _held() -> list[tuple[datetime, NotificationTask]]:
    return [(item.due_at, NotificationTask.decode(item.payload["task"].encode()))
            for item in ScheduledItem.objects.filter(kind=services.RELEASE)]


def _nothing_created() -> bool:
    return not ScheduledItem.objects.exists() and not OutboxEvent.objects.exists()


def _in(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def test_a_delay_holds_it_that_many_seconds_and_answers_scheduled(service_client):
    before = clock.now()
    answer = _post(service_client, delay_seconds=30)
    after = clock.now()

    assert answer.status_code == 202, answer.content
    assert answer.json() == {"id": answer.json()["id"], "status": "scheduled"}
    [(due_at, task)] = _held()
    assert task.notification_id == answer.json()["id"] and task.expires_at == ""
    assert before + timedelta(seconds=30) <= due_at <= after + timedelta(seconds=30)
    assert _queued() == []


def test_a_delay_counts_from_the_schedulers_clock(service_client):
    """Tests move the clock: a delay is due that long after the clock's now, not the wall clock's."""
    with clock.moved(hours=5):
        _post(service_client, delay_seconds=60)
        [(due_at, _)] = _held()
        assert timedelta(seconds=59) < due_at - clock.now() <= timedelta(seconds=60)
        assert services.notifications_release_due() == 0
    with clock.moved(hours=5, seconds=61):
        assert services.notifications_release_due() == 1


@pytest.mark.parametrize("delay", [1, NINETY_DAYS])
def test_the_delay_bounds_are_inclusive(service_client, delay):
    assert _post(service_client, delay_seconds=delay).status_code == 202
    assert len(_held()) == 1


@pytest.mark.parametrize("delay", [
    0, -1, NINETY_DAYS + 1, 10**18, 2**63 - 1,       # out of range
    "3", "03", "3s", "", " 3",                        # strings (JSON)
    3.0, 3.5, 1e3,                                    # floats, whole ones too
    True, False,                                      # booleans (a bool is an int in Python)
    [3], {"seconds": 3},
])
def test_a_delay_that_is_not_an_integer_from_1_s_to_90_days_is_a_400_naming_it(service_client, delay):
    answer = _post(service_client, delay_seconds=delay)
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == ["delay_seconds"]
    assert _nothing_created()


def test_a_null_delay_is_a_400(service_client):
    assert list(_post(service_client, delay_seconds=None).json()) == ["delay_seconds"]
    assert _nothing_created()


def test_a_delay_in_a_form_body_is_its_digits(service_client):
    """Form bodies carry every value as text: there, digits are an integer (and nothing else is)."""
    body = {"sender": "s", "recipient": "r", "kind": "like", "message": "m"}
    answer = service_client.post(URL, {**body, "delay_seconds": "5"})
    assert answer.status_code == 202, answer.content
    for bad in ("5.0", "-5", "five", "0", " 5", "٥"):  # the last an Arabic-Indic five (an empty field is no field)
        answer = service_client.post(URL, {**body, "delay_seconds": bad})
        assert answer.status_code == 400 and "delay_seconds" in answer.json(), (bad, answer.content)
    assert len(_held()) == 1


def test_send_at_and_delay_together_are_a_400_naming_both(service_client):
    answer = _post(service_client, delay_seconds=10, send_at=_in(3600))
    assert answer.status_code == 400
    assert set(answer.json()) == {"send_at", "delay_seconds"}
    assert _nothing_created()


def test_a_null_send_at_with_a_delay_is_the_delay(service_client):
    """A null send_at means none (as documented): the delay alone decides."""
    assert _post(service_client, delay_seconds=10, send_at=None).json()["status"] == "scheduled"


def test_expires_at_is_carried_by_the_task_queued_now(service_client):
    expires_at = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    answer = _post(service_client, expires_at=expires_at.isoformat())
    assert answer.status_code == 202 and answer.json()["status"] == "accepted"
    [task] = _queued()
    assert datetime.fromisoformat(task.expires_at) == expires_at


def test_expires_at_is_carried_by_the_task_held(service_client):
    expires_at = timezone.now() + timedelta(hours=2)
    assert _post(service_client, delay_seconds=60, expires_at=expires_at.isoformat()).status_code == 202
    [(_, task)] = _held()
    assert datetime.fromisoformat(task.expires_at) == expires_at
    with clock.moved(seconds=61):
        services.notifications_release_due()
    [queued] = _queued()
    assert queued.expires_at == task.expires_at


@pytest.mark.parametrize("expires_at", [
    _in(-3600), _in(-1),                               # in the past
    "2030-01-01T00:00:00", "2030-01-01 00:00",          # without an offset
    "soon", "2030-02-30T00:00:00Z", 1765000000, True, ["2030-01-01T00:00:00Z"], "", "\u0000",
])
def test_an_expires_at_that_is_not_a_future_time_with_an_offset_is_a_400_naming_it(service_client, expires_at):
    answer = _post(service_client, expires_at=expires_at)
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == ["expires_at"]
    assert _nothing_created()


_AN_HOUR = _in(3600)


@pytest.mark.parametrize("timing", [
    {"send_at": _in(3600), "expires_at": _in(1800)},
    {"send_at": _AN_HOUR, "expires_at": _AN_HOUR},  # the very same time: not after it
    {"delay_seconds": 3600, "expires_at": _in(1800)},
    {"delay_seconds": 3600, "expires_at": _in(3590)},
])
def test_an_expires_at_not_after_its_send_time_is_a_400_naming_it(service_client, timing):
    answer = _post(service_client, **timing)
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == ["expires_at"]
    assert _nothing_created()


def test_an_expires_at_after_its_send_time_is_taken(service_client):
    assert _post(service_client, send_at=_in(3600), expires_at=_in(3601)).status_code == 202
    assert _post(service_client, delay_seconds=5, expires_at=_in(60)).status_code == 202
    assert len(_held()) == 2


@pytest.mark.parametrize("field", ["delay_seconds", "expires_at"])
def test_a_topic_notification_refuses_them(service_client, field):
    """A topic's notification goes out now (its delays are not built yet): refused, never ignored."""
    value = 10 if field == "delay_seconds" else _in(3600)
    answer = service_client.post(URL, {"sender": "s", "topic": "post:1", "kind": "like", "message": "m", field: value},
                                 format="json")
    assert answer.status_code == 400 and list(answer.json()) == [field]
