from django.core.management.base import BaseCommand

from core import broker


class Command(BaseCommand):
    help = "Create the pipeline's topics that do not exist yet (safe to run again)."

    def handle(self, *args, **options):
        created = broker.topics_ensure()
        for name in (broker.topic_name(t) for t in broker.ALL_TOPICS):
            self.stdout.write(f"{name}: {'created' if name in created else 'exists'}")
