import logging

from django.core.management.base import BaseCommand, CommandError

from notifications_project.bench import fanout, idle, inbox, serving
from notifications_project.bench.harness import BenchEnvironment, results_write

BENCHMARKS = {
    "fanout": "campaign to ALL_USERS, POST -> completed (recipients/s, peak RSS of dispatcher and worker)",
    "inbox": "newest page, next page, unread count, mark read for a user with 100,000 of 10,000,000 rows (p99 ms, "
             "in process, beside django-notifications'); then the newest page and the capped unread count through "
             "gunicorn under wrk (req/s, p99), next to a bare DRF GET",
    "latency": "user-to-user at 100/s for 30 s: API answered -> row written, and -> SSE event received (p99 ms)",
    "idle": "the whole stack 20 s after the last traffic: CPU over 30 s (% of a core), and the first notification after a quiet minute (ms)",
    "api": "POST /api/v1/notifications/ under load from wrk (req/s, p99), next to a bare DRF endpoint",
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
        parser.add_argument("--rows", type=int, help="inbox: notifications in the table (default 10,000,000; quick "
                                                     "100,000); the heavy user has 1 %% of them")
        parser.add_argument("--peer", action="store_true",
                            help="fanout: also run the Celery-on-Redis peer (1,000 recipients a task) and print the ratio")
        parser.add_argument("--templates", action="store_true",
                            help="fanout: then the same fan-out with the campaign's own templates (2 locales), and the ratio")
        parser.add_argument("--rules", action="store_true",
                            help="fanout: then the same fan-out with a frequency cap, quiet hours and time zones on, "
                                 "and the ratio")
        parser.add_argument("--kafka", help="bootstrap servers of a running broker (default: start a dev broker)")
        parser.add_argument("--json", dest="json_path", help="also write the results to this file")

    def handle(self, *args, name: str, quick: bool, recipients: int | None, workers: int, peer: bool, templates: bool,
               rules: bool, kafka: str | None,
               json_path: str | None, rows: int | None, **options):
        if (peer or templates or rules) and name != "fanout":
            raise CommandError("--peer, --templates and --rules are options of fanout")
        logging.getLogger("bench").setLevel(logging.INFO)
        with BenchEnvironment(kafka=kafka, broker_needed=name != "inbox") as env:
            if name == "inbox":
                total = rows or (100_000 if quick else 10_000_000)
                if total < 100:
                    raise CommandError("--rows must be at least 100")
                results = inbox.run(total=total, target_rows=total // 100, samples=50 if quick else 500)
                results += serving.run_inbox_http(env, recipient=inbox.TARGET, seconds=3 if quick else 30,
                                                  connections=16, workers=4)
            if name == "latency":
                results = serving.run_latency(env, rate=100, seconds=3 if quick else 30)
            if name == "api":
                results = serving.run_api(env, seconds=3 if quick else 30, connections=16, workers=4)
            if name == "idle":
                results = idle.run(env, quiet=3 if quick else 20, measure=3 if quick else 30,
                                   before_first=0 if quick else 10)
            if name == "fanout":
                count = recipients or (2_000 if quick else 100_000)
                if count < 1:
                    raise CommandError("--recipients must be at least 1")
                results = fanout.run(env, recipients=count, workers=workers, peer=peer, templates=templates,
                                     rules=rules)
        self.stdout.write(f"\n{'benchmark':<44} {'figure':>12} {'unit':<14} {'ceiling':>10} {'ratio':>6}  note")
        for r in results:
            ceiling = f"{r.ceiling:,.0f}" if r.ceiling else "-"
            ratio = f"{r.ratio:.0%}" if r.ratio else "-"
            self.stdout.write(f"{r.name:<44} {r.figure:>12,} {r.unit:<14} {ceiling:>10} {ratio:>6}  {r.note}")
        if json_path:
            results_write(results, json_path)
