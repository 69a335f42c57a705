from django.contrib import admin

from inbox.models import Notification, Recipient
from notifications_project.admin_mixins import ReadOnlyAdminMixin


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["external_id", "email", "locale", "created_at"]
    search_fields = ["=external_id", "email"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["notification_id", "recipient", "kind", "sender", "short_message", "campaign_id", "delivered_at"]
    list_filter = ["kind"]
    search_fields = ["=notification_id", "=recipient__external_id"]
    list_select_related = ["recipient"]
    show_full_result_count = False  # counting a large inbox table on every page is slow

    @admin.display(description="message")
    def short_message(self, obj):
        return obj.message[:80]
