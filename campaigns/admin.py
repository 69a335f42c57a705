from django.contrib import admin, messages

from campaigns import services
from campaigns.models import Campaign


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "kind", "status", "targeted", "delivered", "skipped", "failed", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["title"]
    actions = ["cancel_campaigns"]
    # Status and counts belong to the pipeline; content is fixed once the campaign is queued.
    readonly_fields = [f.name for f in Campaign._meta.fields]

    def has_add_permission(self, request):
        return False  # campaigns are created through the API, which queues their event

    @admin.action(description="Cancel selected campaigns")
    def cancel_campaigns(self, request, queryset):
        cancelled, refused = 0, []
        for campaign in queryset:
            try:
                services.campaign_cancel(campaign=campaign)
                cancelled += 1
            except services.CampaignConflict as exc:
                refused.append(str(exc))
        self.message_user(request, f"{cancelled} campaign(s) cancelled.")
        for reason in refused:
            self.message_user(request, reason, level=messages.WARNING)
