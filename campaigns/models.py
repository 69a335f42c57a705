from django.db import models
from django.utils import timezone

from core.messages import CAMPAIGN_KINDS, RECIPIENT_ID_MAX_LENGTH, EscalationSpec, Kind, kind_choices


class CampaignStatus(models.TextChoices):
    SCHEDULED = "scheduled"  # held by the scheduler until its send_at (or each zone's local_time)
    QUEUED = "queued"
    DISPATCHING = "dispatching"
    DISPATCHED = "dispatched"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Campaign(models.Model):
    """One message to every recipient of a segment, fanned out by the dispatcher."""

    title = models.CharField(max_length=200)
    body = models.TextField(max_length=2000, blank=True)
    kind = models.CharField(max_length=16, choices=kind_choices(CAMPAIGN_KINDS), default=Kind.OFFER)
    segment = models.JSONField()
    data = models.JSONField(default=dict, blank=True)
    # Its own templates (inbox/templating.py), each {"channel", "locale", and the parts}: a recipient whose
    # locale has one gets it rendered; the others get `title` and `body`.
    templates = models.JSONField(default=list, blank=True)
    # Who caused it, for a notification sent to a topic (its actor, left out of the audience); empty for campaigns.
    sender = models.CharField(max_length=RECIPIENT_ID_MAX_LENGTH, blank=True, default="")
    # {"after_seconds", "channels", "unless"} (core.messages.EscalationSpec): each recipient's email or
    # webhook waits that long after the in-app notification landed, and is sent only if still unread.
    escalate = models.JSONField(null=True, blank=True, default=None)
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.QUEUED)
    # Counts: targeted is written by the dispatcher, the others by the worker, a batch at a time.
    targeted = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    # Held by the scheduler (campaigns.services.campaign_create): until `send_at`, or with `local_time`
    # ("09:00") until that wall time in each recipient's time zone, one scheduler item per zone.
    send_at = models.DateTimeField(null=True, blank=True)
    local_time = models.CharField(max_length=5, blank=True, default="")
    # Recipients held at creation, and those fanned out so far as their zones were released.
    scheduled = models.PositiveIntegerField(default=0)
    released = models.PositiveIntegerField(default=0)
    # The held parts, by zone (a time zone name, or "*": every recipient): {"due_at": iso, "recipients":
    # n held, "released_at": iso or null, "targeted": n fanned out or null, "dispatched": bool}.
    zones = models.JSONField(default=dict, blank=True)
    # Zones not fanned out yet: the campaign does not complete before this is 0.
    zones_left = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "-created_at"], name="campaign_status_newest")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def settled(self) -> int:
        return self.delivered + self.failed + self.skipped

    @property
    def escalation(self) -> EscalationSpec | None:
        return EscalationSpec.of_body(self.escalate) if self.escalate else None
