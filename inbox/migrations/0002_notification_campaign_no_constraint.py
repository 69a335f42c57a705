"""Once: the campaign foreign key without its database constraint. Now a no-op: 0001 makes the plain
bigint column this left (inbox sits below campaigns and keeps no relation to it)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("inbox", "0001_initial")]
    operations = []
