from django.core.management.base import BaseCommand
from django.utils import timezone

from core.broker import broker_reachable
from core.models import ConsumerHeartbeat
from notifications_project.operations import database_reachable, system_figures

STALE_SECONDS = 30


class Command(BaseCommand):
    help = "One screen: consumer processes (last poll, lag), outbox backlog, dead letters, campaigns in flight."

    def handle(self, *args, **options):
        out = self.stdout.write
        out(f"database: {'reachable' if database_reachable() else 'UNREACHABLE'}   "
            f"broker: {'reachable' if broker_reachable() else 'UNREACHABLE'}")

        out("\nConsumer processes")
        now = timezone.now()
        heartbeats = list(ConsumerHeartbeat.objects.order_by("group", "process"))
        if not heartbeats:
            out("  none running (start run_worker, run_dispatcher)")
        for beat in heartbeats:
            age = (now - beat.last_poll_at).total_seconds()
            lag = sum(beat.lag.values())
            busiest = max(beat.lag.items(), key=lambda item: item[1], default=("-", 0))
            state = "STALE: process gone?" if age > STALE_SECONDS else "ok"
            out(f"  {beat.process:<40} {beat.group:<36} polled {age:5.1f} s ago  {beat.records_total:>10,} records  "
                f"lag {lag:,} (most: {busiest[0]} {busiest[1]:,})  {state}")

        figures = system_figures()
        out(f"\nOutbox backlog: {figures['outbox_backlog']:,} events waiting for the relay")
        letters = figures["dead_letters"]
        out("Dead letters waiting: " + (", ".join(f"{reason}: {n:,}" for reason, n in sorted(letters.items())) or "none"))

        out("\nCampaigns in flight")
        if not figures["campaigns_in_flight"]:
            out("  none")
        for campaign in figures["campaigns_in_flight"]:
            share = f"{campaign.settled / campaign.targeted:.0%}" if campaign.targeted else "-"
            out(f"  #{campaign.id:<6} {campaign.title[:30]:<30} {campaign.status:<12} settled {campaign.settled:,} of "
                f"{campaign.targeted:,} targeted ({share}): {campaign.delivered:,} delivered, {campaign.skipped:,} skipped, "
                f"{campaign.failed:,} failed")
