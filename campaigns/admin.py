from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from campaigns import services
from campaigns.models import Campaign, CampaignStatus

UNFINISHED = {CampaignStatus.SCHEDULED, CampaignStatus.QUEUED, CampaignStatus.DISPATCHING, CampaignStatus.DISPATCHED}


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "kind", "status", "progress", "scheduled", "released", "targeted", "delivered", "skipped",
                    "failed", "send_at", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["title"]
    actions = ["cancel_campaigns"]
    # Status and counts belong to the pipeline; content is fixed once the campaign is queued. Its page is
    # therefore read-only (no Save, no Delete), with the progress bar beside the counts and a Cancel button.
    fields = ["progress", *(f.name for f in Campaign._meta.fields)]
    readonly_fields = fields
    change_form_template = "admin/campaigns/campaign/change_form.html"

    @admin.display(description="progress")
    def progress(self, campaign: Campaign):
        """Delivered (and otherwise settled) of targeted, as a bar."""
        if not campaign.targeted:
            return "-"
        share = min(campaign.settled / campaign.targeted, 1.0)
        return format_html(
            '<progress value="{}" max="{}" title="{} delivered of {}"></progress> {}% '
            "({} delivered, {} skipped, {} failed of {})",
            campaign.settled, campaign.targeted, campaign.delivered, campaign.targeted, round(share * 100),
            campaign.delivered, campaign.skipped, campaign.failed, campaign.targeted,
        )

    def has_add_permission(self, request):
        return False  # campaigns are created through the API, which queues their event

    def has_change_permission(self, request, obj=None):
        return False  # nothing on the page may change: it is shown read-only

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger and the inboxes refer to it; cancel stops it

    def may_cancel(self, request) -> bool:
        return request.user.has_perm("campaigns.change_campaign")

    def get_urls(self):
        cancel = self.admin_site.admin_view(require_POST(self.cancel_view))
        return [path("<path:object_id>/cancel/", cancel, name="campaigns_campaign_cancel"), *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), "can_cancel": (
            campaign is not None and campaign.status in UNFINISHED and self.may_cancel(request))}
        return super().change_view(request, object_id, form_url, extra_context)

    def cancel_view(self, request, object_id):
        if not self.may_cancel(request):
            raise PermissionDenied
        campaign = get_object_or_404(Campaign, pk=object_id) if object_id.isdecimal() else None
        if campaign is None:
            raise PermissionDenied  # not an id of ours
        self._cancel(request, [campaign])
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))

    @admin.action(description="Cancel selected campaigns", permissions=["cancel"])
    def cancel_campaigns(self, request, queryset):
        self._cancel(request, queryset)

    def has_cancel_permission(self, request):
        return self.may_cancel(request)

    def _cancel(self, request, campaigns):
        cancelled, refused = 0, []
        for campaign in campaigns:
            try:
                services.campaign_cancel(campaign=campaign)
                cancelled += 1
            except services.CampaignConflict as exc:
                refused.append(str(exc))
        if cancelled:
            self.message_user(request, f"{cancelled} campaign(s) cancelled.")
        for reason in refused:
            self.message_user(request, reason, level=messages.WARNING)
