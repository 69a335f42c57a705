"""Reading records anyone could produce: what is refused as not ours (pure logic); one notification's
content in every form it takes; the one list of kinds and of channels."""

import time
from datetime import datetime, timezone
from types import SimpleNamespace

import orjson
import pytest

from core.messages import (
    CAMPAIGN_KINDS,
    CHUNK_MAX_RECIPIENTS,
    USER_TO_USER_KINDS,
    CampaignChunk,
    CampaignCreated,
    Channel,
    ChannelRetry,
    InvalidPayload,
    Kind,
    NotificationContent,
    NotificationTask,
    send_record_decode,
)


def _raw(**body) -> bytes:
    return orjson.dumps({"v": 1, **body})


@pytest.mark.parametrize("body", [
    {"id": "1:a", "recipient": "a", "campaign": 2**63},           # beyond PostgreSQL's bigint
    {"id": "0:a", "recipient": "a", "campaign": 0},
    {"id": "1:a", "recipient": "a", "campaign": True},
    {"id": "37:victim1", "recipient": "victim2", "campaign": 37},  # would claim another recipient's entry
    {"id": "x" * 161, "recipient": "a", "kind": "like", "message": "m", "created_at": "t"},
    {"id": "x", "recipient": "r" * 129, "kind": "like", "message": "m", "created_at": "t"},
    # NUL: stored as U+FFFD for a dead letter, "6:a\x00b" would settle the real recipient "a\ufffdb"'s entry.
    {"id": "6:a\x00b", "recipient": "a\x00b", "campaign": 6},
    {"id": "x\x00", "recipient": "a", "kind": "like", "message": "m", "created_at": "t"},
])
def test_tasks_that_are_not_ours_are_refused(body):
    with pytest.raises(InvalidPayload):
        NotificationTask.decode(_raw(**body))


def test_a_campaign_task_is_read():
    task = NotificationTask.decode(_raw(id="12:u1", recipient="u1", campaign=12))
    assert (task.campaign_id, task.recipient) == (12, "u1")


def test_a_campaign_chunk_reads_as_the_tasks_it_stands_for():
    chunk = CampaignChunk(campaign_id=7, recipients=("u1", "u2"))
    read = send_record_decode(chunk.encode())
    assert read == chunk
    assert read.unpack() == [NotificationTask(notification_id="7:u1", recipient="u1", campaign_id=7),
                             NotificationTask(notification_id="7:u2", recipient="u2", campaign_id=7)]
    # Each task, encoded alone, is the single-task record of the same campaign (what a dead letter replays).
    assert [NotificationTask.decode(task.encode()) for task in read.unpack()] == read.unpack()


def test_a_single_task_is_still_read_from_the_send_topic():
    assert send_record_decode(_raw(id="12:u1", recipient="u1", campaign=12)) == NotificationTask(
        notification_id="12:u1", recipient="u1", campaign_id=12)


@pytest.mark.parametrize("body", [
    {"campaign": 7, "recipients": []},
    {"campaign": 7, "recipients": "u1"},
    {"campaign": 7, "recipients": ["u1", ""]},
    {"campaign": 7, "recipients": ["u1", 5]},
    {"campaign": 7, "recipients": ["u1", None]},
    {"campaign": 6, "recipients": ["u1", "a\x00b"]},  # see the NUL task above
    {"campaign": 7, "recipients": ["r" * 129]},
    {"campaign": 7, "recipients": ["u"] * (CHUNK_MAX_RECIPIENTS + 1)},
    {"campaign": 0, "recipients": ["u1"]},
    {"campaign": "7", "recipients": ["u1"]},
    {"recipients": ["u1"]},
])
def test_chunks_that_are_not_ours_are_refused(body):
    with pytest.raises(InvalidPayload):
        send_record_decode(_raw(type="CampaignChunk", **body))


@pytest.mark.parametrize("body", [
    {"id": "n", "channel": "webhook", "recipient": "r", "attempt": 2, "due_at": 1e12},  # 30,000 years ahead
    {"id": {"a": 1}, "channel": ["w"], "recipient": {"r": 1}, "attempt": 2, "due_at": 0},
    {"id": "n", "channel": "webhook", "recipient": "r", "attempt": 1.5, "due_at": 0},
    {"id": "n", "channel": "webhook", "recipient": "r", "attempt": 0, "due_at": 0},
    {"id": "n", "channel": "webhook", "recipient": "r", "attempt": 10**9, "due_at": 0},
])
def test_retries_that_are_not_ours_are_refused(body):
    with pytest.raises(InvalidPayload):
        ChannelRetry.decode(_raw(type="ChannelRetry", **body))


def test_a_retry_due_soon_is_read():
    retry = ChannelRetry.decode(_raw(type="ChannelRetry", id="n", channel="webhook", recipient="r", attempt=2,
                                     due_at=time.time() + 4))
    assert retry.attempt == 2


@pytest.mark.parametrize("campaign", [2**63, -1, "7", None])
def test_campaign_events_with_ids_the_database_cannot_hold_are_refused(campaign):
    with pytest.raises(InvalidPayload):
        CampaignCreated.decode(_raw(type="CampaignCreated", campaign=campaign))


def test_kinds_are_split_into_user_to_user_and_campaign_ones():
    assert [k.value for k in USER_TO_USER_KINDS] == ["follow", "mention", "like", "custom"]
    assert [k.value for k in CAMPAIGN_KINDS] == ["offer", "alert", "reminder"]
    assert set(USER_TO_USER_KINDS) | set(CAMPAIGN_KINDS) == set(Kind)
    assert Channel.values == ["in_app", "email", "webhook"]


ACCEPTED = datetime(2026, 11, 21, 20, 55, 1, 123456, tzinfo=timezone.utc)


def test_content_of_a_user_to_user_task():
    task = NotificationTask(notification_id="n-1", recipient="1", kind="like", sender="2", message="Tito liked it",
                            data={"post": 7}, created_at=ACCEPTED.isoformat())

    assert NotificationContent.of_task(task) == NotificationContent(
        kind="like", sender="2", title="", message="Tito liked it", data={"post": 7}, campaign_id=None,
        created_at=ACCEPTED)


def test_content_of_a_campaign():
    campaign = SimpleNamespace(id=5, kind="offer", sender="", title="Sale", body="50% off", data={"code": "X"},
                               created_at=ACCEPTED)

    assert NotificationContent.of_campaign(campaign) == NotificationContent(
        kind="offer", sender="", title="Sale", message="50% off", data={"code": "X"}, campaign_id=5, created_at=ACCEPTED)


def test_the_payload_is_the_webhook_body_and_reads_back():
    content = NotificationContent(kind="offer", sender="", title="Sale", message="50% off", data={"code": "X"},
                                  campaign_id=5, created_at=ACCEPTED)

    payload = content.payload(notification_id="5:1", recipient="1")

    assert orjson.dumps(payload) == (
        b'{"id":"5:1","recipient":"1","kind":"offer","sender":"","title":"Sale","message":"50% off",'
        b'"data":{"code":"X"},"campaign":5,"created_at":"2026-11-21T20:55:01.123456+00:00"}')
    assert NotificationContent.of_payload(orjson.loads(orjson.dumps(payload))) == content


def test_content_stored_in_the_earlier_form_reads_back():
    """Channel deliveries stored before the payload was (Outgoing.content()) are still retried."""
    stored = {"notification_id": "5:1", "recipient": "1", "kind": "offer", "message": "50% off", "title": "Sale",
              "sender": "", "data": {}, "campaign_id": 5, "created_at": ACCEPTED.isoformat()}

    assert NotificationContent.of_payload(stored) == NotificationContent(
        kind="offer", sender="", title="Sale", message="50% off", data={}, campaign_id=5, created_at=ACCEPTED)


def _user_task(**fields) -> NotificationTask:
    return NotificationTask(notification_id="n-2", recipient="1", kind="like", sender="2", message="m",
                            created_at=ACCEPTED.isoformat(), **fields)


def test_expires_at_is_encoded_only_when_set_so_earlier_records_stay_as_they_were():
    plain = _user_task()
    assert b"expires_at" not in plain.encode()
    assert NotificationTask.decode(plain.encode()) == plain
    assert plain.encode().startswith(b'{"v":1,"id":"n-2",')  # what the trace looks records up by

    expiring = _user_task(expires_at="2026-11-21T21:55:01+01:00")
    assert orjson.loads(expiring.encode())["expires_at"] == "2026-11-21T21:55:01+01:00"
    assert NotificationTask.decode(expiring.encode()) == expiring


def test_a_task_is_expired_from_its_expires_at_on():
    task = _user_task(expires_at="2026-11-21T21:00:00+01:00")  # 20:00 UTC
    assert not task.expired(datetime(2026, 11, 21, 19, 59, 59, tzinfo=timezone.utc))
    assert task.expired(datetime(2026, 11, 21, 20, 0, 0, tzinfo=timezone.utc))
    assert not _user_task().expired(datetime(2999, 1, 1, tzinfo=timezone.utc))  # none: never


@pytest.mark.parametrize("expires_at", [
    "", "tomorrow", "2026-13-01T00:00:00Z", "2026-11-21T20:00:00", 1765000000, None, True, ["2026-11-21T20:00:00Z"],
    {"at": "2026-11-21T20:00:00Z"}, "2026-11-21T20:00:00+00:00" + " " * 100,
])
def test_an_expires_at_that_is_not_a_time_with_an_offset_is_an_invalid_payload(expires_at):
    body = orjson.loads(_user_task().encode()) | {"expires_at": expires_at}
    with pytest.raises(InvalidPayload, match="expires_at"):
        NotificationTask.decode(orjson.dumps(body))
