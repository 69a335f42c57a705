"""One record never stops a partition: poison from any producer, channels that raise the unexpected,
a campaign the dispatcher cannot fan out, a statement timeout (real processes, broker, PostgreSQL)."""

import signal
import time
import uuid

import orjson
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import Campaign
from conftest import wait_until
from core import broker
from core.messages import CampaignCreated, NotificationTask
from core.models import DeadLetter, OutboxEvent
from core.outbox import outbox_enqueue
from core.testing import records_produce
from delivery.models import ChannelDelivery, Delivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline


def _task(recipient: str, message: str = "hello", **fields) -> dict:
    return {"v": 1, "id": str(uuid.uuid4()), "recipient": recipient, "kind": "like", "sender": "s",
            "message": message, "data": {}, "created_at": timezone.now().isoformat(), **fields}


def _produce(*bodies: dict, key: str = "7", topic: str = broker.NOTIFICATIONS_SEND) -> None:
    """Straight onto the topic with a plain producer, as any Kafka producer could."""
    records_produce(*((key, orjson.dumps(body)) for body in bodies), topic=topic)


def _delivered(*bodies: dict) -> bool:
    return Notification.objects.filter(notification_id__in=[b["id"] for b in bodies]).count() == len(bodies)


def test_poison_inside_valid_tasks_is_dead_lettered_alone_and_the_partition_goes_on(stack):
    good = [_task("7", f"good {i}") for i in range(3)]
    poison = {
        "nul in data": _task("7", data={"x": "a\u0000b"}),
        "nul in message": _task("7", "a\u0000b"),
        "kind too long": _task("7", kind="k" * 17),
        "sender too long": _task("7", sender="s" * 129),
    }
    # Over the ledger's or directory's limits, or holding NUL: refused when read (never stored shortened
    # or made storable, which could merge two ids or reach another recipient).
    invalid = {"id too long": _task("7") | {"id": "x" * 161}, "recipient too long": _task("r" * 129),
               "nul in recipient": _task("a\u0000b")}
    # All on one partition, poison between the good ones.
    _produce(good[0], poison["nul in data"], poison["nul in message"], good[1], invalid["nul in recipient"],
             invalid["id too long"], poison["kind too long"], invalid["recipient too long"], poison["sender too long"],
             good[2])
    worker = stack.start("run_worker")

    wait_until(lambda: _delivered(*good), timeout=30, what="the good tasks around the poison")
    wait_until(lambda: DeadLetter.objects.count() == len(poison) + len(invalid), what="a dead letter per poison task")
    assert worker.poll() is None
    assert DeadLetter.objects.filter(reason="invalid payload").count() == len(invalid)
    letters = list(DeadLetter.objects.filter(reason="processing failed").order_by("original_offset"))
    assert len(letters) == len(poison)
    assert [orjson.loads(bytes(letter.payload))["message"] for letter in letters[:2]] == ["hello", "a\x00b"]
    assert all(letter.error and letter.original_offset is not None for letter in letters)
    assert "\x00" not in "".join(letter.recipient_external_id + letter.error for letter in letters)
    # The ledger settles each poison task as failed: a repeat of the batch writes nothing twice.
    assert Delivery.objects.filter(outcome="failed").count() == len(poison)
    # The dead letters reach the dead-letter topic through the outbox, which the worker relays itself.
    wait_until(lambda: not OutboxEvent.objects.pending().exists(), what="the dead letters published")

    # A restart does not crash on them, and what comes next is delivered.
    assert stack.stop(worker, signal.SIGTERM) == 0
    worker = stack.start("run_worker")
    after = _task("7", "after the restart")
    _produce(after)
    wait_until(lambda: _delivered(after), timeout=30, what="a task after the restart")
    assert worker.poll() is None
    assert DeadLetter.objects.count() == len(poison) + len(invalid)
    assert Notification.objects.count() == len(good) + 1
    assert not Recipient.objects.filter(external_id__startswith="r" * 128).exists()


def test_a_channel_raising_the_unexpected_fails_that_send_alone_and_the_batch_is_sent_once(stack, webhook_receiver):
    https_to_plain_http = webhook_receiver.url.replace("http://", "https://") + "/tls"  # a TLS error
    Recipient.objects.create(external_id="tls", push_endpoint=https_to_plain_http)
    Recipient.objects.bulk_create([Recipient(external_id=f"ok{i}", push_endpoint=f"{webhook_receiver.url}/ok")
                                   for i in range(10)])
    tasks = [_task(f"ok{i}") for i in range(5)] + [_task("tls")] + [_task(f"ok{i}") for i in range(5, 10)]
    for body in tasks:
        _produce(body, key=body["recipient"])
    worker = stack.start("run_worker")  # one batch: every task was on the topic before it started

    wait_until(lambda: ChannelDelivery.objects.filter(status="sent").count() == 10, timeout=30, what="10 webhooks")
    wait_until(lambda: ChannelDelivery.objects.get(recipient_external_id="tls").status == "dead", timeout=30,
               what="the TLS send dead-lettered")
    assert worker.poll() is None
    # Every other send of the batch reached its receiver exactly once.
    keys = [key for _, key, _ in webhook_receiver.requests_for("/ok")]
    assert sorted(keys) == sorted(b["id"] for b in tasks if b["recipient"] != "tls")
    assert Notification.objects.count() == 11
    assert DeadLetter.objects.get().notification_id == next(b["id"] for b in tasks if b["recipient"] == "tls")


def test_a_campaign_that_cannot_be_fanned_out_is_dead_lettered_and_the_next_one_dispatched(stack, service_client):
    bogus = Campaign.objects.create(title="bogus", segment={"type": "NO_SUCH_SEGMENT"})
    outbox_enqueue(topic=broker.OFFERS_CREATED, key=str(bogus.id), payload=CampaignCreated(bogus.id).encode())
    Recipient.objects.create(external_id="d1")
    dispatcher = stack.start("run_dispatcher")
    stack.start("run_worker")

    good = service_client.post("/api/v1/campaigns/", {"title": "t", "segment": {"type": "USER_IDS", "ids": ["d1"]}},
                               format="json").json()["id"]

    wait_until(lambda: Campaign.objects.get(id=good).status == "completed", timeout=30, what="the good campaign")
    # The two campaigns sit on different partitions: either may be handled first.
    wait_until(lambda: DeadLetter.objects.exists(), timeout=30, what="the bogus campaign dead-lettered")
    [letter] = DeadLetter.objects.all()
    assert (letter.reason, letter.campaign_id) == ("processing failed", bogus.id)
    assert "NO_SUCH_SEGMENT" in letter.error or "Segment" in letter.error
    assert dispatcher.poll() is None


def test_a_statement_timeout_is_retried_not_dead_lettered(stack):
    campaign = Campaign.objects.create(title="locked", segment={"type": "ALL_USERS"}, status="dispatched", targeted=20)
    Recipient.objects.bulk_create([Recipient(external_id=f"c{i}") for i in range(20)])
    tasks = [NotificationTask(notification_id=f"{campaign.id}:c{i}", recipient=f"c{i}", campaign_id=campaign.id)
             for i in range(20)]
    producer = broker.producer_create()
    for task in tasks:
        producer.send(broker.topic_name(broker.NOTIFICATIONS_SEND), key=task.recipient.encode(), value=task.encode())
    producer.flush(timeout=30)
    producer.close()

    # Another transaction holds the campaign's row: the worker's progress UPDATE waits past its timeout.
    db = connection.settings_dict
    holder = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             password=db["PASSWORD"], dbname=db["NAME"])
    holder.execute("SELECT 1 FROM campaigns_campaign WHERE id = %s FOR UPDATE", [campaign.id])
    try:
        worker = stack.start("run_worker", env={"PGOPTIONS": "-c statement_timeout=300"})
        wait_until(lambda: "conflict" in stack.logs(), timeout=30, what="the worker meeting the lock")
    finally:
        holder.rollback()
        holder.close()

    wait_until(lambda: Campaign.objects.get(id=campaign.id).status == "completed", timeout=30, what="the campaign")
    assert Campaign.objects.get(id=campaign.id).delivered == 20
    assert DeadLetter.objects.count() == 0
    assert Notification.objects.count() == 20
    assert worker.poll() is None
    assert "57014" in stack.logs() or "statement timeout" in stack.logs()


def test_records_that_would_wedge_the_worker_are_refused_when_read(stack, webhook_receiver):
    """Found from outside: a campaign id beyond 64 bits (its dead letter could not be written either),
    a campaign task whose id is not <campaign>:<recipient> (it would claim another recipient's ledger
    entry), and retries due in 30,000 years or with ids that are not strings (a paused partition)."""
    Recipient.objects.create(external_id="wflaky", push_endpoint=f"{webhook_receiver.url}/flaky")
    _produce({"v": 1, "id": "huge:poison1", "recipient": "poison1", "campaign": 2**63}, key="poison1")
    _produce({"v": 1, "id": "37:victim1", "recipient": "victim2", "campaign": 37}, key="victim2")
    for retry in ({"id": "nonexistent", "channel": "webhook", "recipient": "wflaky", "attempt": 2, "due_at": 1e12},
                  {"id": {"a": 1}, "channel": ["w"], "recipient": {"r": 1}, "attempt": 2, "due_at": 0}):
        _produce({"v": 1, "type": "ChannelRetry", **retry}, key="wflaky", topic=broker.NOTIFICATIONS_RETRY)
    after = _task("wflaky", "after the hostile records")
    _produce(after, key="wflaky")
    worker = stack.start("run_worker")

    wait_until(lambda: _delivered(after), timeout=30, what="the notification after them")
    # Its webhook fails once (503) and is retried on the retry partition the hostile retry shares.
    wait_until(lambda: ChannelDelivery.objects.filter(notification_id=after["id"], status="sent").exists(),
               timeout=30, what="its webhook retried past the hostile retry")
    assert DeadLetter.objects.filter(reason="invalid payload").count() == 4
    assert not Delivery.objects.filter(notification_id="37:victim1").exists()
    assert worker.poll() is None


def test_a_receiver_dripping_its_answer_does_not_hold_up_other_deliveries(stack, webhook_receiver):
    Recipient.objects.create(external_id="wdrip", push_endpoint=f"{webhook_receiver.url}/drip")
    worker = stack.start("run_worker")
    drip = _task("wdrip", "to a slow receiver")
    _produce(drip, key="wdrip")
    wait_until(lambda: webhook_receiver.requests_for("/drip"), timeout=30, what="the dripping receiver reached")
    started = time.monotonic()
    plain = _task("plain", "no external channel")
    _produce(plain, key="plain")

    wait_until(lambda: _delivered(plain), timeout=30, what="the in-app notification after it")
    assert time.monotonic() - started < 15  # the drip lasts 60 s
    assert ChannelDelivery.objects.get(notification_id=drip["id"]).status == "sent"  # a 200 is a 200
    assert worker.poll() is None


def test_a_database_blip_after_the_sends_sends_nothing_twice(stack, webhook_receiver):
    """Found from outside: the database dropping while a batch's webhooks were in flight made the worker
    handle the batch again and send every one of them a second time."""
    Recipient.objects.bulk_create([Recipient(external_id=f"s{i}", push_endpoint=f"{webhook_receiver.url}/slow")
                                   for i in range(5)])
    tasks = [_task(f"s{i}") for i in range(5)]
    for body in tasks:
        _produce(body, key=body["recipient"])
    worker = stack.start("run_worker", env={"PGAPPNAME": "blip-worker"})
    wait_until(lambda: webhook_receiver.requests_for("/slow"), timeout=30, what="the slow sends under way")

    with connection.cursor() as cursor:  # every connection of the worker's process, mid-send
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE application_name = 'blip-worker' AND datname = current_database()")
        assert cursor.fetchone()[0] >= 1

    wait_until(lambda: ChannelDelivery.objects.filter(status="sent").count() == 5, timeout=60, what="5 sends recorded")
    assert sorted(key for _, key, _ in webhook_receiver.requests_for("/slow")) == sorted(b["id"] for b in tasks)
    assert worker.poll() is None
