"""The API of quiet hours, time zones and escalations: what is accepted is stored (or carried by the
task); hostile input is a 400 naming the field, stores nothing and queues nothing."""

import pytest

from core import topics
from core.messages import EscalationSpec, InvalidPayload, NotificationTask
from core.models import OutboxEvent
from inbox.models import Preference, Recipient

pytestmark = pytest.mark.django_db

SEND = "/api/v1/notifications/"


def _queued() -> list[NotificationTask]:
    return [NotificationTask.decode(bytes(e.payload)) for e in OutboxEvent.objects.filter(topic=topics.SEND.logical)]


def _prefs(client, recipient="1", **body):
    return client.put(f"/api/v1/recipients/{recipient}/preferences/", body, format="json")


def test_quiet_hours_are_stored_and_answered(service_client):
    answer = _prefs(service_client, channels={"email": False}, quiet_hours={"start": "22:00", "end": "08:00"})
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"kinds": {}, "channels": {"email": False}, "quiet_hours": {"start": "22:00", "end": "08:00"}}
    assert service_client.get("/api/v1/recipients/1/preferences/").json()["quiet_hours"] == {"start": "22:00", "end": "08:00"}
    assert _prefs(service_client, quiet_hours=None).json()["quiet_hours"] is None  # null: none
    assert _prefs(service_client, quiet_hours={"start": "09:00", "end": "17:30"}).status_code == 200
    assert _prefs(service_client).json()["quiet_hours"] is None  # absent (PUT replaces): none
    assert Preference.objects.get(recipient__external_id="1").quiet_hours is None
    assert service_client.get("/api/v1/recipients/nobody/preferences/").json()["quiet_hours"] is None


@pytest.mark.parametrize(("quiet_hours", "field"), [
    ({"start": "24:00", "end": "08:00"}, "start"),
    ({"start": "22:00", "end": "8:00"}, "end"),
    ({"start": "22:60", "end": "08:00"}, "start"),
    ({"start": "22:00:00", "end": "08:00"}, "start"),
    ({"start": "22:00", "end": "22:00"}, "end"),
    ({"start": "22:00"}, "end"),
    ({"start": 2200, "end": "08:00"}, "start"),
    ({"start": "22:00", "end": "08:00\u0000"}, None),  # NUL: refused at the door
    ({"start": "22:00", "end": "08:00", "tz": "UTC"}, "non_field_errors"),
    ("22:00-08:00", "non_field_errors"),
    ([], "non_field_errors"),
])
def test_bad_quiet_hours_are_a_400_naming_the_field(service_client, quiet_hours, field):
    answer = _prefs(service_client, quiet_hours=quiet_hours)
    assert answer.status_code == 400, answer.content
    if field is not None:
        assert field in answer.json()["quiet_hours"], answer.json()
    assert not Preference.objects.exists()


def test_a_time_zone_is_set_by_the_upsert_and_by_patch(service_client):
    assert service_client.post("/api/v1/recipients/", {"id": "tz", "timezone": "Europe/Berlin"},
                               format="json").status_code == 200
    assert Recipient.objects.get(external_id="tz").timezone == "Europe/Berlin"
    assert service_client.post("/api/v1/recipients/", [{"id": "tz", "email": "tz@example.com"}],
                               format="json").status_code == 200
    assert Recipient.objects.get(external_id="tz").timezone == "Europe/Berlin"  # only the fields given are written
    answer = service_client.patch("/api/v1/recipients/tz/", {"timezone": "America/New_York"}, format="json")
    assert answer.status_code == 200 and answer.json()["timezone"] == "America/New_York"
    assert service_client.patch("/api/v1/recipients/tz/", {"timezone": ""}, format="json").json()["timezone"] == ""
    assert service_client.get("/api/v1/recipients/tz/").json()["timezone"] == ""


@pytest.mark.parametrize("value", ["Mars/Olympus", "europe/berlin", "+02:00", "CEST", "../../../etc/passwd", "localtime",
                                   "posixrules",
                                   "Europe/Berlin/", "x" * 65, 1, None, ["UTC"]])
def test_a_time_zone_that_is_not_iana_is_a_400(service_client, value):
    answer = service_client.post("/api/v1/recipients/", {"id": "bad", "timezone": value}, format="json")
    assert answer.status_code == 400 and "timezone" in answer.json(), answer.content
    assert not Recipient.objects.filter(external_id="bad").exists()
    Recipient.objects.create(external_id="there")
    answer = service_client.patch("/api/v1/recipients/there/", {"timezone": value}, format="json")
    assert answer.status_code == 400 and "timezone" in answer.json(), answer.content
    assert Recipient.objects.get(external_id="there").timezone == ""


def test_an_escalation_is_carried_by_the_task(service_client):
    answer = service_client.post(SEND, {"sender": "s", "recipient": "r", "kind": "like", "message": "hi",
                                        "escalate": {"after_seconds": 3600, "channels": ["email", "webhook", "email"]}},
                                 format="json")
    assert answer.status_code == 202, answer.content
    [task] = _queued()
    assert task.escalate == EscalationSpec(after_seconds=3600, channels=("email", "webhook"), unless="read")
    assert b'"escalate"' in task.encode()
    plain = service_client.post(SEND, {"sender": "s", "recipient": "r", "kind": "like", "message": "hi",
                                       "escalate": None}, format="json")
    assert plain.status_code == 202
    assert [t.escalate for t in _queued()].count(None) == 1
    assert b"escalate" not in NotificationTask(notification_id="x", recipient="r", kind="like", message="m",
                                               created_at="2026-01-01T00:00:00+00:00").encode()  # absent unless set


@pytest.mark.parametrize(("escalate", "field"), [
    ({"after_seconds": 0, "channels": ["email"]}, "after_seconds"),
    ({"after_seconds": 30 * 86400 + 1, "channels": ["email"]}, "after_seconds"),
    ({"after_seconds": 10**30, "channels": ["email"]}, None),  # beyond 64 bits: refused at the door
    ({"after_seconds": "soon", "channels": ["email"]}, "after_seconds"),
    ({"after_seconds": "3", "channels": ["email"]}, "after_seconds"),  # (found from outside: strings and
    ({"after_seconds": 3.0, "channels": ["email"]}, "after_seconds"),  # floats were taken, unknown keys
    ({"after_seconds": 3, "channels": ["email"], "extra": 1}, "non_field_errors"),  # ignored)
    ({"after_seconds": 60, "channels": []}, "channels"),
    ({"after_seconds": 60, "channels": ["sms"]}, "channels"),
    ({"after_seconds": 60, "channels": ["in_app"]}, "channels"),
    ({"after_seconds": 60, "channels": "email"}, "channels"),
    ({"after_seconds": 60}, "channels"),
    ({"after_seconds": 60, "channels": ["email"], "unless": "archived"}, "unless"),
    ("soon", "non_field_errors"),
])
def test_a_bad_escalation_is_a_400_naming_the_field(service_client, escalate, field):
    answer = service_client.post(SEND, {"sender": "s", "recipient": "r", "kind": "like", "message": "hi",
                                        "escalate": escalate}, format="json")
    assert answer.status_code == 400, answer.content
    if field is not None:
        assert field in answer.json()["escalate"], answer.json()
    assert not _queued()


def test_an_escalation_with_a_digest_is_a_400(service_client):
    answer = service_client.post(SEND, {"sender": "s", "recipient": "r", "kind": "like", "message": "hi",
                                        "digest": {"key": "k", "window_seconds": 60},
                                        "escalate": {"after_seconds": 60, "channels": ["email"]}}, format="json")
    assert answer.status_code == 400 and "escalate" in answer.json()
    assert not _queued()


@pytest.mark.parametrize("escalate", [
    {"after_seconds": 0, "channels": ["email"]}, {"after_seconds": 60, "channels": []},
    {"after_seconds": 60, "channels": ["sms"]}, {"after_seconds": True, "channels": ["email"]},
    {"after_seconds": 60, "channels": ["email"], "unless": "x"}, [60],
])
def test_a_record_with_a_bad_escalation_is_not_ours(escalate):
    import orjson

    body = {"v": 1, "id": "i", "recipient": "r", "kind": "like", "message": "m", "created_at": "2026-01-01T00:00:00+00:00",
            "escalate": escalate}
    with pytest.raises(InvalidPayload):
        NotificationTask.decode(orjson.dumps(body))
