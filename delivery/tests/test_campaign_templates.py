"""A campaign's own templates: checked when the campaign is created (400 naming the template and its
line), and rendered by the worker in each recipient's locale; a recipient whose locale has none gets
the campaign's title and body."""

import pytest

from campaigns.factories import CampaignFactory
from campaigns.models import Campaign
from core.messages import CampaignChunk, Origin
from delivery.models import ChannelDelivery
from delivery.services import deliveries_settle
from inbox.factories import RecipientFactory
from inbox.models import Notification
from inbox.templating import TemplateRenderError

pytestmark = pytest.mark.django_db

VALID = {"title": "Sale", "body": "20% off", "kind": "offer", "segment": {"type": "ALL_USERS"}, "data": {"pct": 20}}
DE = {"channel": "in_app", "locale": "de", "title": "Schlussverkauf", "body": "{{ data.pct }} % Rabatt, {{ recipient.id }}"}
EMAIL_DE = {"channel": "email", "locale": "de", "subject": "Rabatt", "text": "Hallo {{ recipient.attributes.name }}"}
ORIGIN = Origin("notifications.send", 0, 1)


def test_a_campaign_is_created_with_its_templates(service_client):
    answer = service_client.post("/api/v1/campaigns/", VALID | {"templates": [DE, EMAIL_DE]}, format="json")
    assert answer.status_code == 201, answer.content
    stored = Campaign.objects.get().templates
    assert stored == [DE, EMAIL_DE]
    assert answer.json()["templates"] == stored


@pytest.mark.parametrize(("templates", "says"), [
    ([DE | {"body": "{% for x in data %}"}], "Line 1"),
    ([DE, DE], "one per channel and locale"),
    ([DE | {"locale": "xx-!!"}], "locale"),
    ([DE | {"channel": "sms"}], "channel"),
    ([{"channel": "email", "locale": "", "subject": "s"}], "text"),
    ([DE] * 51, "no more than 50"),
    ("not a list", "list"),
])
def test_bad_templates_are_a_400_and_store_nothing(service_client, templates, says):
    answer = service_client.post("/api/v1/campaigns/", VALID | {"templates": templates}, format="json")
    assert answer.status_code == 400, answer.content
    assert "templates" in answer.json() and says.lower() in str(answer.json()).lower()
    assert not Campaign.objects.exists()


def test_each_recipient_gets_the_template_of_its_locale_or_the_title_and_body():
    campaign = CampaignFactory(status="dispatched", title="Sale", body="20% off", data={"pct": 20},
                               templates=[DE, EMAIL_DE])
    RecipientFactory(external_id="anna", locale="de-AT", email="anna@example.com", attributes={"name": "Anna"})
    RecipientFactory(external_id="bo", locale="de", email="")
    RecipientFactory(external_id="cy", locale="fr", email="")
    RecipientFactory(external_id="di", locale="", email="")

    result = deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("anna", "bo", "cy", "di")),
                                        ORIGIN)])

    assert result.delivered == 4
    rows = {n.recipient.external_id: (n.title, n.message, n.campaign_id)
            for n in Notification.objects.select_related("recipient")}
    assert rows == {
        "anna": ("Schlussverkauf", "20 % Rabatt, anna", campaign.id),
        "bo": ("Schlussverkauf", "20 % Rabatt, bo", campaign.id),
        "cy": ("Sale", "20% off", campaign.id),
        "di": ("Sale", "20% off", campaign.id),
    }
    email = ChannelDelivery.objects.get()
    assert (email.recipient_external_id, email.content["title"], email.content["message"]) == ("anna", "Rabatt", "Hallo Anna")
    # Read again (a redelivered chunk): nothing changes.
    assert deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("anna", "bo", "cy", "di")),
                                      ORIGIN)]).delivered == 0
    assert Notification.objects.count() == 4


def test_a_template_that_fails_for_a_recipient_raises_for_that_recipient_alone():
    campaign = CampaignFactory(status="dispatched", templates=[DE | {"body": "{{ 1 | divided_by: recipient.attributes.n }}"}])
    RecipientFactory(external_id="ok", locale="de", attributes={"n": 1})
    RecipientFactory(external_id="bad", locale="de", attributes={"n": 0})
    deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("ok",)), ORIGIN)])
    assert Notification.objects.get().message == "1"
    with pytest.raises(TemplateRenderError, match=f"campaign {campaign.id}'s template"):
        deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=("bad",)), ORIGIN)])


def test_a_template_that_reads_nothing_of_the_recipient_is_rendered_once_per_locale_and_never_leaks(monkeypatch):
    from delivery import rendering
    from inbox import templating

    translated = {"channel": "in_app", "locale": "de", "title": "Rabatt", "body": "{{ data.pct }} % Rabatt"}
    personal = {"channel": "in_app", "locale": "", "title": "Sale", "body": "Hi {{ recipient.attributes.name }}"}
    dynamic = {"channel": "in_app", "locale": "fr", "title": "Solde",
               "body": "{% assign k = 'recip' | append: 'ient' %}{{ [k].attributes.name }}"}
    campaign = CampaignFactory(status="dispatched", data={"pct": 20}, templates=[translated, personal, dynamic])
    for name, locale in [("a", "de"), ("b", "de-AT"), ("c", "de"), ("d", ""), ("e", ""), ("f", "fr"), ("g", "fr")]:
        RecipientFactory(external_id=name, locale=locale, email="", attributes={"name": name.upper()})
    renders = []
    real_render = templating.render
    monkeypatch.setattr(templating, "render", lambda t, c: renders.append(c["recipient"]["id"]) or real_render(t, c))
    rendering._shared_texts.clear()

    deliveries_settle(chunks=[(CampaignChunk(campaign_id=campaign.id, recipients=tuple("abcdefg")), ORIGIN)])

    texts = dict(Notification.objects.values_list("recipient__external_id", "message"))
    assert texts == {"a": "20 % Rabatt", "b": "20 % Rabatt", "c": "20 % Rabatt", "d": "Hi D", "e": "Hi E",
                     "f": "F", "g": "G"}
    assert sorted(renders) == ["a", "b", "d", "e", "f", "g"]  # de once (c shares a's), de-AT once; the rest each
