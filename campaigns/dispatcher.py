"""The dispatcher's loop: consume campaign events and fan each one out to its recipients, in chunks
of recipients that share a partition (core.messages.CampaignChunk)."""

import logging

from campaigns.services import FanOutInterrupted, campaign_dispatch
from core import broker, monitoring, topics
from core.consumer import BatchConsumer, Heartbeat, StopFlag
from core.dead_letters import (
    dead_letter_of,
    dead_letter_write,
    dead_letters_record_invalid,
)
from core.failures import describe
from core.messages import Envelope
from core.publisher import ChunkPublisher

logger = logging.getLogger("campaigns.dispatcher")


def campaign_event_dead_letter(*, envelope: Envelope, error: BaseException) -> bool:
    """A campaign event whose fan-out failed on its own (not an outage) is set aside with its error."""
    letter = dead_letter_of(envelope=envelope, error=describe(error))
    letter.campaign_id = envelope.message.campaign_id
    dead_letter_write(letter=letter)
    logger.warning("dead letter: campaign %s failed: %s", letter.campaign_id, letter.error)
    return True


def dispatcher_run(*, stop: StopFlag, heartbeat: Heartbeat) -> None:
    """Consume offers.created until `stop` is set; each campaign's fan-out is committed on its own."""
    publisher = ChunkPublisher()

    def should_stop() -> bool:  # asked between pages of a fan-out
        heartbeat.beat()
        consumer.keep_alive()  # a long fan-out keeps its place in the group
        return stop.is_set()

    def dispatch_events(envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            campaign_dispatch(campaign_id=envelope.message.campaign_id, publisher=publisher, should_stop=should_stop,
                              zone=envelope.message.zone)

    logger.info("dispatcher: consuming %s as group %s", topics.CAMPAIGNS.name,
                broker.group_name(broker.DISPATCHER_GROUP))
    try:
        consumer = BatchConsumer(
            name="dispatcher",
            topics=(topics.CAMPAIGNS,),
            logical_group=broker.DISPATCHER_GROUP,
            handle_batch=dispatch_events,
            handle_invalid=lambda records: dead_letters_record_invalid(records=records),
            handle_failed=lambda envelope, error: campaign_event_dead_letter(envelope=envelope, error=error),
            max_poll_records=1,  # commit after each campaign's fan-out
            # A fan-out polls between its pages (keep_alive): a minute is ample, and a rebalance
            # waits no longer than that for members that went away.
            max_poll_interval_ms=60_000,
            stop=stop,
            heartbeat=heartbeat,
            **monitoring.CALLBACKS,
        )
        consumer.run()
    except FanOutInterrupted as exc:
        logger.info("dispatcher: %s", exc)
    finally:
        publisher.close()
