from django.contrib import admin

from core.admin_mixins import ReadOnlyAdminMixin
from inbox.models import Notification, Recipient


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["external_id", "email", "locale", "created_at"]
    search_fields = ["=external_id", "email"]
    # The push endpoint is set through the API, whose answer carries its new signing secret; the
    # secrets themselves are never shown here beyond their first characters.
    exclude = ["push_secret", "push_secret_previous"]
    readonly_fields = ["push_endpoint", "signing_secret", "push_secret_previous_until", "created_at", "updated_at"]

    @admin.display(description="signing secret")
    def signing_secret(self, obj):
        return f"{obj.push_secret[:10]}… (hidden; rotate it through the API)" if obj.push_secret else "-"


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
