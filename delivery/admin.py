from django.contrib import admin, messages
from django.db.models import Count

from core.admin_mixins import ReadOnlyAdminMixin
from core.models import DeadLetter, DeadLetterStatus, OutboxEvent
from delivery import services
from delivery.models import ChannelDelivery, Delivery


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["notification_id", "recipient_external_id", "campaign_id", "outcome", "reason", "settled_at"]
    list_filter = ["outcome"]
    search_fields = ["=notification_id", "=recipient_external_id"]
    show_full_result_count = False


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


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "topic", "key", "created_at"]
    list_filter = ["topic"]
