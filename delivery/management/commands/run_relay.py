from delivery.commands import PipelineCommand
from delivery.outbox import relay_run


class Command(PipelineCommand):
    help = ("Publish the outbox to Kafka on its own. run_worker and run_dispatcher already do it "
            "(RELAY_EMBEDDED); a lock lets one process publish at a time, so any number may run.")

    def handle(self, *args, heartbeat_file: str | None, metrics_port: int, **options):
        stop, heartbeat = self.pipeline_start(heartbeat_file=heartbeat_file, metrics_port=metrics_port)
        relay_run(stop=stop, heartbeat=heartbeat)
