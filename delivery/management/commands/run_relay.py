from campaigns.services import campaigns_recover_lost_topics
from core.commands import PipelineCommand
from core.relay import relay_run


class Command(PipelineCommand):
    help = ("Publish the outbox to Kafka on its own. run_worker and run_dispatcher already do it "
            "(RELAY_EMBEDDED); a lock lets one process publish at a time, so any number may run.")

    def handle(self, *args, heartbeat_file: str | None, metrics_port: int, **options):
        stop, heartbeat = self.pipeline_start(heartbeat_file=heartbeat_file, metrics_port=metrics_port)
        relay_run(stop=stop, heartbeat=heartbeat, on_topics_lost=campaigns_recover_lost_topics)
