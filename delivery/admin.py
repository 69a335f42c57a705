from django import forms
from django.contrib import admin, messages
from django.db.models import Count

from core.admin_mixins import ReadOnlyAdminMixin
from core.models import DeadLetter, DeadLetterStatus, OutboxEvent, ScheduledItem
from delivery import caps, services
from delivery.models import ChannelDelivery, Delivery, DigestWindow, FrequencyCap
from inbox import kinds as kind_registry


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["notification_id", "recipient_external_id", "campaign_id", "outcome", "reason", "settled_at"]
    list_filter = ["outcome"]
    search_fields = ["=notification_id", "=recipient_external_id"]
    show_full_result_count = False


@admin.register(DigestWindow)
class DigestWindowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Digest windows: open ones gather events until `closes_at`; a closed one became `digest:<id>`."""

    list_display = ["id", "recipient_external_id", "key", "kind", "events_count", "opened_at", "closes_at", "closed_at"]
    list_filter = ["kind", ("closed_at", admin.EmptyFieldListFilter)]
    search_fields = ["=recipient_external_id", "=key"]
    show_full_result_count = False
    readonly_fields = ["first_events"]

    @admin.display(description="first events")
    def first_events(self, window) -> str:
        events = window.events.order_by("id")[:20]
        return "; ".join(f"{e.notification_id} from {e.sender}" for e in events) or "-"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(events_count=Count("events"))

    @admin.display(description="events", ordering="events_count")
    def events_count(self, window) -> int:
        return window.events_count


@admin.register(ChannelDelivery)
class ChannelDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["notification_id", "channel", "recipient_external_id", "status", "attempts", "last_error", "updated_at"]
    list_filter = ["channel", "status"]
    search_fields = ["=notification_id", "=recipient_external_id"]
    show_full_result_count = False


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "reason", "channel", "campaign_id", "recipient_external_id", "attempts", "status", "created_at"]
    list_filter = ["status", "reason", "channel"]
    search_fields = ["=notification_id", "=recipient_external_id", "=campaign_id"]
    actions = ["replay", "discard"]

    def changelist_view(self, request, extra_context=None):
        by_reason = DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).values("reason").annotate(n=Count("id"))
        summary = ", ".join(f"{row['reason']}: {row['n']}" for row in by_reason.order_by("reason")) or "none"
        extra_context = {**(extra_context or {}), "title": f"Dead letters (waiting, by reason: {summary})"}
        return super().changelist_view(request, extra_context)

    @admin.action(description="Replay selected dead letters (publish their tasks again)")
    def replay(self, request, queryset):
        for letter in queryset:
            self.message_user(request, services.dead_letter_replay(dead_letter=letter))

    @admin.action(description="Discard selected dead letters")
    def discard(self, request, queryset):
        count = services.dead_letters_discard(ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{count} dead letter(s) discarded.", level=messages.INFO)


@admin.register(ScheduledItem)
class ScheduledItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Work that waits (core/scheduler.py): held notifications (send_at, delays) and campaigns (send_at,
    local_time by zone), sends held by quiet hours or an escalation or waiting to retry, digest windows'
    closes. All but the digests can be cancelled here."""

    list_display = ["due_at", "kind", "what", "lane", "why", "releases"]
    list_filter = ["kind"]
    search_fields = ["=key", "=lane"]
    ordering = ["due_at"]
    show_full_result_count = False
    actions = ["cancel_items"]

    @admin.display(description="what")
    def what(self, item) -> str:
        return item.key.removeprefix("release:")

    @admin.display(description="why")
    def why(self, item) -> str:
        payload = item.payload if isinstance(item.payload, dict) else {}
        return str(payload.get("held") or ("retry" if item.kind == services.SEND and item.releases else "") or "-")

    @admin.action(description="Cancel selected held notifications, campaigns and waiting sends")
    def cancel_items(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        counts = services.scheduled_items_cancel(ids=ids)
        # Selected on the page but gone since (released, or done): left too (found from outside).
        counts.left += max(0, len(set(request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))) - len(ids))
        self.message_user(request, f"{counts.notifications} held notification(s), {counts.sends} send(s) and "
                                   f"{counts.campaigns} campaign(s) cancelled.")
        if counts.left:
            self.message_user(request, f"{counts.left} item(s) left: released meanwhile, or not cancellable "
                              "(a digest window closes on its own).", level=messages.WARNING)

    def has_cancel_items_permission(self, request) -> bool:
        return request.user.is_staff


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "topic", "key", "created_at"]
    list_filter = ["topic"]


class FrequencyCapForm(forms.ModelForm):
    """The API's checks (delivery.serializers.FrequencyCapInput) for the admin's form."""

    channel = forms.ChoiceField(choices=[(c, c) for c in caps.CHANNELS])
    max = forms.IntegerField(min_value=caps.MAX_MIN, max_value=caps.MAX_MAX)
    per_seconds = forms.IntegerField(min_value=caps.PER_SECONDS_MIN, max_value=caps.PER_SECONDS_MAX,
                                     help_text="The sliding window, in seconds (1 s to 30 days).")

    class Meta:
        model = FrequencyCap
        fields = ["channel", "kind", "max", "per_seconds"]

    def clean_kind(self):
        kind = self.cleaned_data.get("kind") or None
        if kind is not None and not kind_registry.kind_exists(kind):
            raise forms.ValidationError(f'"{kind}" is not a kind; valid kinds: {kind_registry.kind_choices_text()}.')
        return kind


@admin.register(FrequencyCap)
class FrequencyCapAdmin(admin.ModelAdmin):
    """Frequency caps: the worker reads them again within a few seconds of a change."""

    form = FrequencyCapForm
    list_display = ["id", "channel", "kind", "max", "per_seconds", "created_at"]
    list_filter = ["channel"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        caps.caps_forget()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        caps.caps_forget()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        caps.caps_forget()
