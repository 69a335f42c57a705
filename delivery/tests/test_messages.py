"""Reading records anyone could produce: what is refused as not ours (pure logic)."""

import time

import orjson
import pytest

from delivery.messages import CampaignCreated, ChannelRetry, InvalidPayload, NotificationTask


def _raw(**body) -> bytes:
    return orjson.dumps({"v": 1, **body})


@pytest.mark.parametrize("body", [
    {"id": "1:a", "recipient": "a", "campaign": 2**63},           # beyond PostgreSQL's bigint
    {"id": "0:a", "recipient": "a", "campaign": 0},
    {"id": "1:a", "recipient": "a", "campaign": True},
    {"id": "37:victim1", "recipient": "victim2", "campaign": 37},  # would claim another recipient's entry
    {"id": "x" * 161, "recipient": "a", "kind": "like", "message": "m", "created_at": "t"},
    {"id": "x", "recipient": "r" * 129, "kind": "like", "message": "m", "created_at": "t"},
])
def test_tasks_that_are_not_ours_are_refused(body):
    with pytest.raises(InvalidPayload):
        NotificationTask.decode(_raw(**body))


def test_a_campaign_task_is_read():
    task = NotificationTask.decode(_raw(id="12:u1", recipient="u1", campaign=12))
    assert (task.campaign_id, task.recipient) == (12, "u1")


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
