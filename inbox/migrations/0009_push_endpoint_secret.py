"""A signing secret per push endpoint, and the previous one during a rotation's grace period."""

from django.db import migrations, models

import inbox.models


def secrets_for_existing_endpoints(apps, schema_editor):
    """Each recipient that already has an endpoint gets a secret of its own (a field default would
    give them all the same one). Operators read it with the rotate route."""
    Recipient = apps.get_model("inbox", "Recipient")
    batch = []
    for recipient in Recipient.objects.exclude(push_endpoint="").only("pk").iterator(chunk_size=2000):
        recipient.push_secret = inbox.models.push_secret_new()
        batch.append(recipient)
        if len(batch) == 2000:
            Recipient.objects.bulk_update(batch, ["push_secret"])
            batch = []
    Recipient.objects.bulk_update(batch, ["push_secret"])


class Migration(migrations.Migration):
    dependencies = [("inbox", "0008_recipient_token_generation")]

    operations = [
        migrations.AddField(
            model_name="recipient",
            name="push_secret",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
        migrations.AddField(
            model_name="recipient",
            name="push_secret_previous",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
        migrations.AddField(
            model_name="recipient",
            name="push_secret_previous_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(secrets_for_existing_endpoints, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="recipient",
            name="push_secret",
            field=models.CharField(blank=True, db_default="", default=inbox.models.push_secret_new, max_length=100),
        ),
    ]
