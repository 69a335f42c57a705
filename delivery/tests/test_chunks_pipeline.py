"""A campaign goes out in chunks that keep each recipient's partition (real processes, broker and
PostgreSQL): every recipient once, on the partition its user-to-user notifications take; a chunk read
again changes nothing; one recipient that fails is dead-lettered alone, as a task that replays."""

import pytest
from django.db import connection
from django.db.models import Count

from campaigns.models import Campaign, CampaignStatus
from conftest import wait_until
from core import broker
from core.messages import CampaignChunk, NotificationTask, send_record_decode
from core.models import DeadLetter
from core.publisher import partition_of
from core.testing import records_produce_to_partitions, topic_partition_count, topic_read
from delivery import services
from delivery.models import Delivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

RECIPIENTS = 600
CHUNK = 25  # small chunks: many per partition


def _start(stack, *worker_args: str) -> None:
    stack.start("run_dispatcher", env={"DISPATCHER_CHUNK_SIZE": str(CHUNK), "DISPATCHER_PAGE_SIZE": "100"})
    stack.start("run_worker", *worker_args)


def _campaign(client) -> int:
    response = client.post("/api/v1/campaigns/", {"title": "Sale", "body": "20% off", "segment": {"type": "ALL_USERS"}},
                           format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _completed(campaign_id: int):
    campaign = Campaign.objects.get(id=campaign_id)
    return campaign if campaign.status == CampaignStatus.COMPLETED else None


def _user_to_user(client, recipient: str) -> str:
    response = client.post("/api/v1/notifications/", {"recipient": recipient, "kind": "like", "sender": "s",
                                                      "message": "hi"}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_a_campaign_goes_out_in_chunks_each_on_its_recipients_partition(stack, service_client):
    Recipient.objects.bulk_create([Recipient(external_id=f"r{i}") for i in range(RECIPIENTS)])
    _start(stack)
    _user_to_user(service_client, "r5")
    campaign_id = _campaign(service_client)

    campaign = wait_until(lambda: _completed(campaign_id), timeout=60, what="campaign completed")
    assert (campaign.targeted, campaign.delivered, campaign.skipped, campaign.failed) == (RECIPIENTS, RECIPIENTS, 0, 0)
    rows = Notification.objects.filter(campaign_id=campaign_id)
    assert rows.count() == RECIPIENTS
    assert not rows.values("recipient").annotate(n=Count("id")).filter(n__gt=1).exists()
    # Reached in-app only: each inbox row is its recipient's ledger entry (no second row per recipient).
    assert not Delivery.objects.filter(campaign_id=campaign_id).exists()

    records = topic_read(broker.NOTIFICATIONS_SEND, until=lambda seen: _chunked(seen) >= RECIPIENTS and any(
        not _is_chunk(r) for r in seen))
    chunks = [(r.partition, send_record_decode(r.value)) for r in records if _is_chunk(r)]
    partitions = topic_partition_count()
    assert sorted(recipient for _, chunk in chunks for recipient in chunk.recipients) == sorted(
        f"r{i}" for i in range(RECIPIENTS))  # each recipient in one chunk, once
    assert all(len(chunk.recipients) <= CHUNK for _, chunk in chunks)
    assert all(partition_of(recipient, partitions) == partition for partition, chunk in chunks
               for recipient in chunk.recipients)
    # The user-to-user notification to r5 took the partition of r5's chunk: one worker holds both.
    [direct_record] = [r for r in records if not _is_chunk(r)]
    [r5_partition] = [partition for partition, chunk in chunks if "r5" in chunk.recipients]
    assert direct_record.partition == r5_partition


def test_a_chunk_read_again_changes_nothing(stack, service_client):
    Recipient.objects.bulk_create([Recipient(external_id=f"r{i}") for i in range(RECIPIENTS)])
    # Batches of 30 tasks: a poll of up to 30 chunks is settled and committed in parts of two chunks.
    _start(stack, "--batch-size", "30")
    campaign_id = _campaign(service_client)
    wait_until(lambda: _completed(campaign_id), timeout=60, what="campaign completed")
    before = set(Notification.objects.filter(campaign_id=campaign_id).values_list("id", flat=True))

    # The whole fan-out again, as a redelivery after a crash would bring it, then a user-to-user
    # notification behind it on every partition: once those arrive, the repeats have been read.
    records = topic_read(broker.NOTIFICATIONS_SEND, until=lambda seen: _chunked(seen) >= RECIPIENTS)
    records_produce_to_partitions(*((record.partition, record.value) for record in records))
    sentinels = {_user_to_user(service_client, f"r{i}") for i in range(40)}  # 40 recipients: every partition
    wait_until(lambda: Notification.objects.filter(notification_id__in=sentinels).count() == len(sentinels),
               what="the notifications behind the repeated chunks")

    assert set(Notification.objects.filter(campaign_id=campaign_id).values_list("id", flat=True)) == before
    campaign = Campaign.objects.get(id=campaign_id)
    assert (campaign.delivered, campaign.skipped, campaign.failed) == (RECIPIENTS, 0, 0)
    # Reached in-app only: each inbox row is its recipient's ledger entry (no second row per recipient).
    assert not Delivery.objects.filter(campaign_id=campaign_id).exists()


def test_one_recipient_that_fails_is_dead_lettered_alone_and_replays_as_a_task(stack, service_client):
    Recipient.objects.bulk_create([Recipient(external_id=f"r{i}") for i in range(RECIPIENTS)])
    with connection.cursor() as cursor:  # r7's inbox row cannot be written (as a bug its data triggers would)
        cursor.execute("""
            CREATE FUNCTION refuse_r7() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
            CREATE TRIGGER refuse_r7 BEFORE INSERT ON inbox_notification FOR EACH ROW
            WHEN (NEW.notification_id LIKE '%:r7') EXECUTE FUNCTION refuse_r7();
        """)
    _start(stack)
    campaign_id = _campaign(service_client)

    campaign = wait_until(lambda: _completed(campaign_id), timeout=60, what="campaign completed")
    assert (campaign.delivered, campaign.failed) == (RECIPIENTS - 1, 1)
    assert not Notification.objects.filter(notification_id=f"{campaign_id}:r7").exists()
    [letter] = DeadLetter.objects.all()
    assert (letter.notification_id, letter.recipient_external_id, letter.campaign_id) == (
        f"{campaign_id}:r7", "r7", campaign_id)
    assert "refused for the test" in letter.error
    # Its record is the single task it stood for: replayed, it is delivered on its own.
    assert NotificationTask.decode(bytes(letter.payload)) == NotificationTask(
        notification_id=f"{campaign_id}:r7", recipient="r7", campaign_id=campaign_id)
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER refuse_r7 ON inbox_notification; DROP FUNCTION refuse_r7()")
    services.dead_letter_replay(dead_letter=letter)
    wait_until(lambda: Notification.objects.filter(notification_id=f"{campaign_id}:r7").exists(),
               what="the replayed task delivered")
    wait_until(lambda: Campaign.objects.get(id=campaign_id).delivered == RECIPIENTS, what="counted as delivered")
    assert Campaign.objects.get(id=campaign_id).failed == 0


def _chunked(records) -> int:
    """How many recipients the chunks among `records` stand for."""
    return sum(len(send_record_decode(r.value).recipients) for r in records if _is_chunk(r))


def _is_chunk(record) -> bool:
    return isinstance(send_record_decode(record.value), CampaignChunk)

