from django.contrib import admin

from delivery.models import Delivery, OutboxEvent
from notifications_project.admin_mixins import ReadOnlyAdminMixin


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["notification_id", "recipient_external_id", "campaign_id", "outcome", "reason", "settled_at"]
    list_filter = ["outcome"]
    search_fields = ["=notification_id", "=recipient_external_id"]
    show_full_result_count = False


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "topic", "key", "created_at"]
    list_filter = ["topic"]
