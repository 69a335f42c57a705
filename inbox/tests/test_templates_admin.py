"""The admin edits templates with the API's checks and shows them rendered."""

import pytest
from django.contrib.auth import get_user_model

from inbox.models import NotificationKind, Template

pytestmark = pytest.mark.django_db

FORM = {"kind": "like", "channel": "in_app", "locale": "de-at", "title": "Neues Like", "body": "{{ actor }} mag {{ data.post }}",
        "subject": "", "text": "", "html": "", "preview_actor": "Tito", "preview_data": '{"post": "dein Foto"}'}


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("admin", password="pw-123456789", is_staff=True,
                                                             is_superuser=True))
    return client


def test_a_template_that_does_not_parse_is_refused_with_its_line(staff_client):
    response = staff_client.post("/admin/inbox/template/add/", {**FORM, "body": "ok\n{% if x %}"})

    assert response.status_code == 200 and b"Line 2: " in response.content
    assert not Template.objects.exists()


def test_a_saved_template_is_shown_rendered_with_the_preview_values(staff_client):
    response = staff_client.post("/admin/inbox/template/add/", {**FORM, "_continue": "1"}, follow=True)

    template = Template.objects.get()
    assert template.locale == "de-AT"
    assert "Tito mag dein Foto" in response.content.decode()  # the message and the rendered field
    assert staff_client.get(f"/admin/inbox/template/{template.pk}/change/").content.decode().count("Tito mag dein Foto") >= 1


def test_registered_kinds_cannot_be_deleted(staff_client):
    kind = NotificationKind.objects.create(name="nudge")

    staff_client.post(f"/admin/inbox/notificationkind/{kind.pk}/delete/", {"post": "yes"})

    assert NotificationKind.objects.filter(name="nudge").exists()
