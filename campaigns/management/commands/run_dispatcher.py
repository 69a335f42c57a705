from campaigns.dispatcher import dispatcher_run
from campaigns.services import campaigns_recover_lost_topics
from core.commands import PipelineCommand


class Command(PipelineCommand):
    help = "Consume offers.created and fan each campaign out to one task per recipient on notifications.send."

    def handle(self, *args, heartbeat_file: str | None, metrics_port: int, **options):
        stop, heartbeat = self.pipeline_start(heartbeat_file=heartbeat_file, metrics_port=metrics_port)
        relay = self.relay_start(stop=stop, sole_relay=False, on_topics_lost=campaigns_recover_lost_topics)
        try:
            dispatcher_run(stop=stop, heartbeat=heartbeat)
        finally:
            stop.set()
            self.relay_stop(relay)
