from django.core.management.base import BaseCommand

from delivery.retention import retention_purge


class Command(BaseCommand):
    help = ("Delete once what is past its retention (what run_worker does every RETENTION_PURGE_INTERVAL_SECONDS): "
            "old Idempotency-Keys, published outbox events, sent channel deliveries, discarded dead letters.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None, help="rows per statement (RETENTION_PURGE_BATCH_SIZE)")

    def handle(self, *args, batch_size: int | None, **options):
        result = retention_purge(batch_size=batch_size, time_budget=float("inf"))
        if result.locked_out:
            self.stdout.write("Another process is purging; nothing done.")
            return
        self.stdout.write(f"Purged {result.summary()}.")
