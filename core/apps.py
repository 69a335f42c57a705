from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The bottom layer: transport (broker, topics, messages, outbox and relay, the consume loop) and the
    helpers every app uses (database, fields, API plumbing, idempotency, dead letters)."""

    name = "core"
    verbose_name = "Transport and shared pieces"

    def ready(self):
        from django.core.signals import request_started

        from core.db import connections_trust_idle

        request_started.connect(connections_trust_idle, dispatch_uid="core.connections_trust_idle")
