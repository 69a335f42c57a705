"""Prometheus metrics of the pipeline processes (served on --metrics-port by each of them)."""

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS_CONSUMED = Counter("notifications_records_consumed_total", "Records read from Kafka", ["process", "topic"])
RECORDS_INVALID = Counter("notifications_records_invalid_total", "Records that were not ours (dead-lettered)", ["process"])
DELIVERIES = Counter("notifications_deliveries_total", "Notifications settled by the worker", ["outcome", "kind"])
CHANNEL_ATTEMPTS = Counter("notifications_channel_attempts_total", "External channel attempts", ["channel", "result"])
DEAD_LETTERS = Counter("notifications_dead_letters_total", "Dead letters written", ["reason", "channel"])
BATCH_SIZE = Histogram("notifications_batch_records", "Records per handled batch", ["process"],
                       buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000))
BATCH_SECONDS = Histogram("notifications_batch_seconds", "Time to handle a batch (database and channels)", ["process"],
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CONSUMER_LAG = Gauge("notifications_consumer_lag", "Records behind the high watermark", ["process", "topic", "partition"])
OUTBOX_PUBLISHED = Counter("notifications_outbox_published_total", "Outbox events published by the relay")
OUTBOX_BACKLOG = Gauge("notifications_outbox_backlog", "Outbox events waiting to be published")
FANOUT_TASKS = Counter("notifications_fanout_tasks_total", "Tasks produced by the dispatcher")
DIGESTS_OPENED = Counter("notifications_digests_opened_total", "Digest windows opened (by a first notification)")
CAPPED = Counter("notifications_capped_total", "Deliveries not made on a channel: over a frequency cap", ["channel"])
CHANNEL_HELD = Counter("notifications_channel_held_total",
                       "External sends held when settled (due later): reason quiet_hours or escalation",
                       ["channel", "reason"])
ESCALATIONS = Counter("notifications_escalations_total",
                      "Escalated sends when due: escalated (still unread, sent) or cancelled (read or seen first)",
                      ["channel", "result"])
NOTIFICATIONS_SCHEDULED = Counter("notifications_scheduled_total",
                                  "Notifications held for their send_at or delay when accepted (API process)")
NOTIFICATIONS_RELEASED = Counter("notifications_released_total", "Held notifications queued when due")
CAMPAIGN_PARTS_RELEASED = Counter("notifications_campaign_parts_released_total",
                                  "Held campaigns' parts (send_at, or one time zone's local_time) queued when due")
DIGESTS_CLOSED = Counter("notifications_digests_closed_total", "Digest windows closed (each one notification queued)")


def metrics_serve(port: int) -> None:
    """Serve /metrics on this port in a background thread (0: do not serve)."""
    if port:
        start_http_server(port)
