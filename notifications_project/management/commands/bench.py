import logging

from django.core.management.base import BaseCommand, CommandError

from notifications_project.bench import fanout
from notifications_project.bench.harness import BenchEnvironment, results_write

BENCHMARKS = {
    "fanout": "campaign to ALL_USERS, POST -> completed (recipients/s, peak RSS of dispatcher and worker)",
}


class Command(BaseCommand):
    help = "Run a benchmark on loopback (own database, own broker) and print its figures. " + "; ".join(
        f"{name}: {what}" for name, what in BENCHMARKS.items()
    )

    def add_arguments(self, parser):
        parser.add_argument("name", choices=sorted(BENCHMARKS))
        parser.add_argument("--quick", action="store_true", help="a small run (seconds), as the test suite does")
        parser.add_argument("--recipients", type=int, help="fanout: recipients to seed (default 100,000; quick 2,000)")
        parser.add_argument("--workers", type=int, default=1, help="fanout: worker processes (default 1)")
        parser.add_argument("--kafka", help="bootstrap servers of a running broker (default: start a dev broker)")
        parser.add_argument("--json", dest="json_path", help="also write the results to this file")

    def handle(self, *args, name: str, quick: bool, recipients: int | None, workers: int, kafka: str | None,
               json_path: str | None, **options):
        logging.getLogger("bench").setLevel(logging.INFO)
        with BenchEnvironment(kafka=kafka) as env:
            if name == "fanout":
                count = recipients or (2_000 if quick else 100_000)
                if count < 1:
                    raise CommandError("--recipients must be at least 1")
                results = fanout.run(env, recipients=count, workers=workers)
        self.stdout.write(f"\n{'benchmark':<44} {'figure':>12} {'unit':<14} {'ceiling':>10} {'ratio':>6}  note")
        for r in results:
            ceiling = f"{r.ceiling:,.0f}" if r.ceiling else "-"
            ratio = f"{r.ratio:.0%}" if r.ratio else "-"
            self.stdout.write(f"{r.name:<44} {r.figure:>12,} {r.unit:<14} {ceiling:>10} {ratio:>6}  {r.note}")
        if json_path:
            results_write(results, json_path)
