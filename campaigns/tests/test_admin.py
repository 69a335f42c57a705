"""A campaign's admin page: read-only (no Save, no Delete), its progress bar and counts, and Cancel."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from campaigns.factories import CampaignFactory
from campaigns.models import Campaign, CampaignStatus

pytestmark = pytest.mark.django_db

SAVE_BUTTONS = (b'name="_save"', b'name="_continue"', b'name="_addanother"', b"deletelink\" href", b"/delete/")


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True,
                                                             is_superuser=True))
    return client


def _page(client, campaign) -> str:
    response = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_campaign_page_shows_its_progress_and_counts_and_no_save_or_delete(staff_client):
    campaign = CampaignFactory(status=CampaignStatus.DISPATCHED, targeted=200, delivered=120, skipped=20, failed=10)
    page = _page(staff_client, campaign)
    assert '<progress value="150" max="200"' in page
    assert "75% (120 delivered, 20 skipped, 10 failed of 200)" in page
    for button in SAVE_BUTTONS:
        assert button.decode() not in page, button
    assert 'value="Cancel this campaign"' in page and 'formaction="cancel/"' in page


def test_a_finished_campaign_offers_no_cancel(staff_client):
    page = _page(staff_client, CampaignFactory(status=CampaignStatus.COMPLETED, targeted=3, delivered=3))
    assert "Cancel this campaign" not in page


def test_cancel_from_the_campaign_page(staff_client):
    campaign = CampaignFactory(status=CampaignStatus.DISPATCHING, targeted=10)
    response = staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/cancel/", follow=True)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CANCELLED
    assert b"1 campaign(s) cancelled." in response.content
    assert response.redirect_chain[-1][0] == f"/admin/campaigns/campaign/{campaign.pk}/change/"


def test_cancel_of_a_completed_campaign_says_why_and_changes_nothing(staff_client):
    campaign = CampaignFactory(status=CampaignStatus.COMPLETED)
    response = staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/cancel/", follow=True)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    assert b"only an unfinished campaign can be cancelled" in response.content


@pytest.mark.parametrize("object_id", ["999999", "abc", "1%00", "-1"])
def test_cancel_of_no_such_campaign_changes_nothing(staff_client, object_id):
    campaign = CampaignFactory(status=CampaignStatus.QUEUED)
    response = staff_client.post(f"/admin/campaigns/campaign/{object_id}/cancel/")
    assert response.status_code in (403, 404)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.QUEUED


def test_cancel_needs_a_post_and_the_change_permission(client):
    viewer = get_user_model().objects.create_user("viewer", password="pw-123456789", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    client.force_login(viewer)
    campaign = CampaignFactory(status=CampaignStatus.QUEUED)
    assert "Cancel this campaign" not in _page(client, campaign)
    assert client.get(f"/admin/campaigns/campaign/{campaign.pk}/cancel/").status_code == 405
    assert client.post(f"/admin/campaigns/campaign/{campaign.pk}/cancel/").status_code == 403
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.QUEUED


def test_no_read_only_admin_page_offers_save_or_delete(staff_client):
    """The pages of records the pipeline owns (ReadOnlyAdminMixin) and the campaign's."""
    from django.contrib import admin

    from core.admin_mixins import ReadOnlyAdminMixin
    from inbox.factories import NotificationFactory

    NotificationFactory()
    CampaignFactory()
    for model, model_admin in admin.site._registry.items():
        if not (isinstance(model_admin, ReadOnlyAdminMixin) or model is Campaign):
            continue
        instance = model.objects.first()
        if instance is None:
            continue
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/{instance.pk}/change/"
        page = staff_client.get(url).content
        for button in SAVE_BUTTONS:
            assert button not in page, (url, button)


def test_a_scheduled_campaign_shows_its_scheduled_and_released_counts_and_can_be_cancelled(staff_client):
    campaign = CampaignFactory(status=CampaignStatus.SCHEDULED, local_time="09:00", scheduled=7, released=2)
    listing = staff_client.get("/admin/campaigns/campaign/").content.decode()
    assert "column-scheduled" in listing and "column-released" in listing
    assert '<td class="field-scheduled">7</td><td class="field-released">2</td>' in listing
    assert 'value="Cancel this campaign"' in _page(staff_client, campaign)
