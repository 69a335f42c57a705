"""`digest` on POST /api/v1/notifications/ and a kind's default digest (POST /api/v1/kinds/): what is
accepted goes into the task; bad input is a 400 naming the field and queues nothing."""

import pytest

from core import topics
from core.messages import DigestSpec, NotificationTask
from core.models import OutboxEvent
from inbox.models import NotificationKind

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/"


def _post(client, **fields):
    return client.post(URL, {"sender": "s", "recipient": "r", "kind": "like", **fields}, format="json")


def _queued() -> list[NotificationTask]:
    return [NotificationTask.decode(bytes(e.payload)) for e in OutboxEvent.objects.filter(topic=topics.SEND.logical)]


def test_a_digest_is_carried_by_the_task_and_needs_no_message_nor_template(service_client):
    answer = _post(service_client, digest={"key": "post:42", "window_seconds": 300})
    assert answer.status_code == 202, answer.content
    [task] = _queued()
    assert (task.notification_id, task.message, task.digest) == (answer.json()["id"], "", DigestSpec("post:42", 300))


def test_without_a_digest_nor_a_message_a_kind_without_template_is_still_a_400(service_client):
    answer = _post(service_client)
    assert answer.status_code == 400 and "message" in answer.json()
    assert not _queued()


@pytest.mark.parametrize(("digest", "field"), [
    ({"key": "k" * 201, "window_seconds": 60}, "key"),
    ({"key": "", "window_seconds": 60}, "key"),
    ({"key": 42, "window_seconds": 60}, None),
    ({"key": "k", "window_seconds": 0}, "window_seconds"),
    ({"key": "k", "window_seconds": 7 * 86400 + 1}, "window_seconds"),
    ({"key": "k", "window_seconds": "soon"}, "window_seconds"),
    ({"key": "k", "window_seconds": 1.5}, "window_seconds"),
    ({"key": "k", "window_seconds": True}, "window_seconds"),
    ({"key": "k"}, "window_seconds"),
    ({"window_seconds": 60}, "key"),
    ("post:42", "non_field_errors"),
    ([{"key": "k", "window_seconds": 60}], "non_field_errors"),
])
def test_a_bad_digest_is_a_400_naming_the_field_and_queues_nothing(service_client, digest, field):
    answer = _post(service_client, message="hi", digest=digest)
    if field is None:  # DRF's CharField takes a number as its text: accepted, as "42"
        assert answer.status_code == 202 and _queued()[0].digest.key == "42"
        return
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["digest"]
    assert not _queued()


def test_a_nul_in_the_key_is_a_400_naming_it(service_client):
    answer = _post(service_client, message="hi", digest={"key": "a\u0000b", "window_seconds": 60})
    assert answer.status_code == 400 and "digest.key" in str(answer.json())
    assert not _queued()


def test_a_null_digest_is_none(service_client):
    assert _post(service_client, message="hi", digest=None).status_code == 202
    assert _queued()[0].digest is None


def test_a_kind_can_declare_a_default_digest(service_client):
    answer = service_client.post("/api/v1/kinds/", {"name": "comment", "digest_window_seconds": 600}, format="json")
    assert answer.status_code == 201, answer.content
    assert NotificationKind.objects.get(name="comment").digest_window_seconds == 600
    listed = {k["name"]: k for k in service_client.get("/api/v1/kinds/").json()}
    assert listed["comment"]["digest_window_seconds"] == 600
    assert listed["like"]["digest_window_seconds"] is None
    assert listed["alert"]["urgent"] is True and listed["like"]["urgent"] is False

    for bad in (0, 7 * 86400 + 1, "x", True):
        answer = service_client.post("/api/v1/kinds/", {"name": "other", "digest_window_seconds": bad}, format="json")
        assert answer.status_code == 400 and "digest_window_seconds" in answer.json()
    assert not NotificationKind.objects.filter(name="other").exists()


def test_an_urgent_kind_is_never_folded_so_without_a_message_it_needs_its_template(service_client):
    assert service_client.post("/api/v1/kinds/", {"name": "uk", "urgent": True}, format="json").status_code == 201
    answer = _post(service_client, kind="uk", digest={"key": "x", "window_seconds": 3})
    assert answer.status_code == 400 and "message" in answer.json()
    assert not _queued()
    assert _post(service_client, kind="uk", message="now", digest={"key": "x", "window_seconds": 3}).status_code == 202
