from django.contrib import admin, messages
from django.utils.html import format_html

from campaigns import services
from campaigns.models import Campaign


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "kind", "status", "progress", "targeted", "delivered", "skipped", "failed", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["title"]
    actions = ["cancel_campaigns"]
    # Status and counts belong to the pipeline; content is fixed once the campaign is queued.
    readonly_fields = [f.name for f in Campaign._meta.fields]

    @admin.display(description="progress")
    def progress(self, campaign: Campaign):
        """Delivered (and otherwise settled) of targeted, as a bar."""
        if not campaign.targeted:
            return "-"
        share = min(campaign.settled / campaign.targeted, 1.0)
        return format_html(
            '<progress value="{}" max="{}" title="{} delivered of {}"></progress> {}%',
            campaign.settled, campaign.targeted, campaign.delivered, campaign.targeted, round(share * 100),
        )

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
