"""The shared models, moved here from delivery and notifications_project (whose migrations copy their
rows over and drop the old tables)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from core.migration_helpers import notify_after_insert
from core.outbox import NOTIFY_CHANNEL


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ConsumerHeartbeat',
            fields=[
                ('process', models.CharField(help_text='name@host:pid', max_length=200, primary_key=True, serialize=False)),
                ('group', models.CharField(max_length=200)),
                ('last_poll_at', models.DateTimeField()),
                ('records_total', models.BigIntegerField(default=0)),
                ('lag', models.JSONField(default=dict, help_text='Records behind the high watermark, per topic[partition].')),
            ],
        ),
        migrations.CreateModel(
            name='DeadLetter',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reason', models.CharField(choices=[('invalid payload', 'Invalid Payload'), ('permanent failure', 'Permanent Failure'), ('retries exhausted', 'Retries Exhausted'), ('processing failed', 'Processing Failed')], max_length=32)),
                ('error', models.TextField(blank=True)),
                ('notification_id', models.CharField(blank=True, max_length=160)),
                ('channel', models.CharField(blank=True, max_length=16)),
                ('recipient_external_id', models.CharField(blank=True, max_length=128, verbose_name='recipient')),
                ('campaign_id', models.BigIntegerField(blank=True, null=True)),
                ('attempts', models.PositiveSmallIntegerField(default=0)),
                ('original_topic', models.CharField(max_length=200)),
                ('original_partition', models.IntegerField(blank=True, null=True)),
                ('original_offset', models.BigIntegerField(blank=True, null=True)),
                ('payload', models.BinaryField(help_text='The record as it was consumed (truncated to 512 KiB).')),
                ('status', models.CharField(choices=[('dead', 'Dead'), ('replayed', 'Replayed'), ('discarded', 'Discarded')], default='dead', max_length=16)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('resolved_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'indexes': [models.Index(fields=['status', '-created_at'], name='core_dead_letter_status_newest')],
            },
        ),
        migrations.CreateModel(
            name='IdempotencyKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('scoped_key', models.CharField(max_length=300, unique=True)),
                ('request_fingerprint', models.CharField(max_length=64)),
                ('response_status', models.PositiveSmallIntegerField(null=True)),
                ('response_body', models.JSONField(null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name='OutboxEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('topic', models.CharField(help_text='Logical topic name, without KAFKA_TOPIC_PREFIX.', max_length=200)),
                ('key', models.CharField(max_length=200)),
                ('payload', models.BinaryField()),
                ('headers', models.JSONField(blank=True, default=dict, help_text='Record headers (string values).')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('published_at', models.DateTimeField(blank=True, null=True)),
                ('published_partition', models.IntegerField(blank=True, null=True)),
                ('published_offset', models.BigIntegerField(blank=True, null=True)),
            ],
            options={
                'indexes': [models.Index(condition=models.Q(('published_at', None)), fields=['id'], name='core_outbox_pending'), models.Index(fields=['topic', 'published_at'], name='core_outbox_published')],
            },
        ),
        # Every statement that inserts outbox rows wakes the relay (LISTEN outbox_event); SQLite polls.
        notify_after_insert(table="core_outboxevent", channel=NOTIFY_CHANNEL),
    ]
