"""Channel sends moved from the poll loop to the scheduler (core.ScheduledItem): every delivery still
pending or retrying gets its item, due now (a retry waiting on the retry topic is sent a little
early; its row's attempt count keeps the retry limit)."""

from django.db import migrations
from django.utils import timezone

SEND = "channel.send"  # delivery.services.SEND, as it was when this migration was written


def schedule_unsent(apps, schema_editor):
    ChannelDelivery = apps.get_model("delivery", "ChannelDelivery")
    ScheduledItem = apps.get_model("core", "ScheduledItem")
    now = timezone.now()
    unsent = ChannelDelivery.objects.filter(status__in=["pending", "retrying"]).values_list("id", flat=True)
    ScheduledItem.objects.bulk_create(
        [ScheduledItem(kind=SEND, key=f"send:{pk}", due_at=now, payload={"channel_delivery": pk}, created_at=now)
         for pk in unsent.iterator()],
        batch_size=1000, ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0009_models_moved_to_core"),
        ("core", "0002_scheduled_items"),
    ]

    operations = [migrations.RunPython(schedule_unsent, migrations.RunPython.noop)]
