import pytest

from campaigns.dispatcher import campaign_event_dead_letter
from core.messages import CampaignCreated, Envelope, Origin
from core.models import DeadLetter, DeadLetterReason, OutboxEvent


@pytest.mark.django_db
def test_a_campaign_event_that_failed_is_dead_lettered_with_its_campaign_and_provenance():
    raw = CampaignCreated(77).encode()
    envelope = Envelope(CampaignCreated(77), Origin("t.offers.created", 2, 41), raw)
    assert campaign_event_dead_letter(envelope=envelope, error=ValueError("bad\x00segment"))
    letter = DeadLetter.objects.get()
    assert (letter.reason, letter.campaign_id, letter.original_topic, letter.original_partition,
            letter.original_offset, bytes(letter.payload)) == (
        DeadLetterReason.PROCESSING_FAILED, 77, "t.offers.created", 2, 41, raw)
    assert "\x00" not in letter.error and "ValueError" in letter.error
    event = OutboxEvent.objects.get()  # its dead-letter-topic record, in the same transaction
    assert (event.topic, bytes(event.payload), event.headers["reason"]) == ("notifications.dlq", raw, "processing failed")
