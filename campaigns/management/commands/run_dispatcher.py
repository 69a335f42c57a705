import logging

from campaigns.services import FanOutInterrupted, campaign_dispatch
from delivery import broker
from delivery.commands import PipelineCommand
from delivery.consumer import BatchConsumer
from delivery.messages import CampaignCreated, Envelope
from delivery.publisher import TaskPublisher
from delivery.failures import describe
from delivery.services import dead_letters_record_invalid, envelope_dead_letter

logger = logging.getLogger("campaigns.dispatcher")


class Command(PipelineCommand):
    help = "Consume offers.created and fan each campaign out to one task per recipient on notifications.send."

    def handle(self, *args, heartbeat_file: str | None, metrics_port: int, **options):
        stop, heartbeat = self.pipeline_start(heartbeat_file=heartbeat_file, metrics_port=metrics_port)
        publisher = TaskPublisher()
        relay = self.relay_start(stop=stop, sole_relay=False)

        def should_stop() -> bool:  # asked between pages of a fan-out
            heartbeat.beat()
            return stop.is_set()

        def dispatch_events(envelopes: list[Envelope]) -> None:
            for envelope in envelopes:
                campaign_dispatch(
                    campaign_id=envelope.message.campaign_id,
                    publish=publisher.publish,
                    flush=publisher.flush,
                    should_stop=should_stop,
                )

        logger.info("dispatcher: consuming %s as group %s", broker.topic_name(broker.OFFERS_CREATED),
                    broker.group_name(broker.DISPATCHER_GROUP))
        try:
            BatchConsumer(
                name="dispatcher",
                decoders={broker.OFFERS_CREATED: CampaignCreated.decode},
                logical_group=broker.DISPATCHER_GROUP,
                handle_batch=dispatch_events,
                handle_invalid=lambda records: dead_letters_record_invalid(records=records),
                handle_failed=lambda envelope, error: envelope_dead_letter(envelope=envelope, error=describe(error)),
                max_poll_records=1,  # commit after each campaign's fan-out
                stop=stop,
                heartbeat=heartbeat,
            ).run()
        except FanOutInterrupted as exc:
            logger.info("dispatcher: %s", exc)
        finally:
            stop.set()
            publisher.close()
            self.relay_stop(relay)
