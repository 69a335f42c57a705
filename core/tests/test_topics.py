import pytest

from core import topics
from core.messages import CampaignCreated, ChannelRetry, NotificationTask
from core.models import OutboxEvent


def _task(recipient: str = "u1") -> NotificationTask:
    return NotificationTask(notification_id="n1", recipient=recipient, kind="like", sender="s", message="hi",
                            created_at="2026-11-21T00:00:00+00:00")


def test_each_topic_keys_its_records_so_that_one_recipient_keeps_one_partition():
    assert topics.SEND.key(_task("alice")) == "alice"
    assert topics.RETRY.key(ChannelRetry("n1", "webhook", "alice", 2, 0.0)) == "alice"
    assert topics.CAMPAIGNS.key(CampaignCreated(42)) == "42"


def test_names_carry_the_prefix_and_topic_of_finds_only_our_own(settings):
    settings.KAFKA_TOPIC_PREFIX = "acme."
    assert topics.SEND.name == "acme.notifications.send"
    assert topics.topic_of("acme.notifications.retry") is topics.RETRY
    assert topics.topic_of("notifications.retry") is None  # another deployment's (no prefix)
    assert topics.topic_of("acme.other") is None


@pytest.mark.django_db
def test_enqueue_writes_one_outbox_event_with_the_topics_key_and_encoding():
    task = _task("bob")
    topics.SEND.enqueue(task)
    topics.CAMPAIGNS.enqueue_many([CampaignCreated(1), CampaignCreated(2)])
    events = list(OutboxEvent.objects.order_by("id"))
    assert [(e.topic, e.key) for e in events] == [
        ("notifications.send", "bob"), ("offers.created", "1"), ("offers.created", "2")]
    assert NotificationTask.decode(bytes(events[0].payload)) == task
    assert topics.SEND.decode(bytes(events[0].payload)) == task
