"""Settling notifications sent without a message: rendered from their kind's templates in each
recipient's locale, per channel, with a fixed number of queries per batch whatever its size."""

from datetime import datetime, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.messages import NotificationTask
from delivery.models import ChannelDelivery
from delivery.services import deliveries_settle
from inbox.factories import RecipientFactory
from inbox.models import Notification, Template
from inbox.templating import TemplateMissing, TemplateRenderError

pytestmark = pytest.mark.django_db

ACCEPTED = datetime(2026, 11, 21, 20, 55, 1, tzinfo=timezone.utc)


def _task(notification_id: str, recipient: str, *, kind: str = "like", message: str = "", **data) -> NotificationTask:
    return NotificationTask(notification_id=notification_id, recipient=recipient, kind=kind, sender="Tito",
                            message=message, data=data or {"post": "the photo"}, created_at=ACCEPTED.isoformat())


@pytest.fixture
def like_templates():
    Template.objects.create(kind="like", channel="in_app", locale="", title="New like", body="{{ actor }} liked {{ data.post }}")
    Template.objects.create(kind="like", channel="in_app", locale="de", title="Neues Like",
                            body="{{ actor }} gefällt {{ data.post }}")


def _messages() -> dict[str, tuple[str, str]]:
    return {n.notification_id: (n.title, n.message) for n in Notification.objects.all()}


def test_each_recipient_gets_its_locale_falling_back_to_language_then_default(settings, like_templates):
    settings.PUSH_GATEWAY_URL = ""
    RecipientFactory(external_id="at", locale="de-AT", email="", push_endpoint="")
    RecipientFactory(external_id="fr", locale="fr", email="", push_endpoint="")

    deliveries_settle(tasks=[_task("n1", "at"), _task("n2", "fr"), _task("n3", "new"),
                             _task("n4", "at", message="Typed by hand")])

    assert _messages() == {"n1": ("Neues Like", "Tito gefällt the photo"), "n2": ("New like", "Tito liked the photo"),
                           "n3": ("New like", "Tito liked the photo"), "n4": ("", "Typed by hand")}


def test_channels_with_templates_of_their_own_get_them_the_others_the_in_app_one(settings, like_templates):
    settings.PUSH_GATEWAY_URL = ""
    Template.objects.create(kind="like", channel="email", locale="de", subject="{{ actor }} mag {{ data.post }}",
                            text="Hallo {{ recipient.id }}", html="<p>Hallo <b>{{ recipient.id }}</b></p>")
    RecipientFactory(external_id="at", locale="de-AT", email="at@example.com", push_endpoint="https://h.example.com/n")

    deliveries_settle(tasks=[_task("n1", "at")])

    stored = {row.channel: row.content for row in ChannelDelivery.objects.all()}
    assert (stored["email"]["title"], stored["email"]["message"], stored["email"]["html"]) == (
        "Tito mag the photo", "Hallo at", "<p>Hallo <b>at</b></p>")
    assert (stored["webhook"]["title"], stored["webhook"]["message"]) == ("Neues Like", "Tito gefällt the photo")
    assert "html" not in stored["webhook"]


def test_a_batch_costs_the_same_queries_for_one_or_a_hundred_and_compiles_once(settings, like_templates):
    settings.PUSH_GATEWAY_URL = ""
    for i in range(100):
        RecipientFactory(external_id=f"r{i}", locale=["de-AT", "fr", "de", ""][i % 4], email="", push_endpoint="")
    deliveries_settle(tasks=[_task("warm", "r0")])  # compiled now

    with CaptureQueriesContext(connection) as one:
        deliveries_settle(tasks=[_task("one", "r1")])
    with CaptureQueriesContext(connection) as hundred:
        deliveries_settle(tasks=[_task(f"m{i}", f"r{i}") for i in range(100)])

    assert len(hundred.captured_queries) == len(one.captured_queries)
    assert not any('"text"' in q["sql"] and "inbox_template" in q["sql"] for q in hundred.captured_queries), \
        "the sources are loaded only for templates this process has not compiled"
    assert Notification.objects.count() == 102


def test_a_template_saved_since_is_compiled_again(settings, like_templates):
    settings.PUSH_GATEWAY_URL = ""
    RecipientFactory(external_id="fr", locale="fr", email="", push_endpoint="")
    deliveries_settle(tasks=[_task("n1", "fr")])
    template = Template.objects.get(locale="")
    template.body = "{{ actor }} ❤ {{ data.post }}"
    template.save()

    deliveries_settle(tasks=[_task("n2", "fr")])

    assert Notification.objects.get(notification_id="n2").message == "Tito ❤ the photo"


def test_a_render_failure_raises_for_the_consumer_to_isolate_and_writes_nothing(settings):
    settings.PUSH_GATEWAY_URL = ""
    Template.objects.create(kind="like", channel="in_app", locale="", body="{{ data.n | divided_by: 0 }}")

    with pytest.raises(TemplateRenderError, match=r"like, in_app, default\), body: divided_by: can't divide by 0"):
        deliveries_settle(tasks=[_task("n1", "1", n=3)])

    assert not Notification.objects.exists()


def test_no_template_at_all_raises_template_missing(settings):
    settings.PUSH_GATEWAY_URL = ""

    with pytest.raises(TemplateMissing, match="no in_app template of like in the default locale"):
        deliveries_settle(tasks=[_task("n1", "1")])


def test_a_stored_template_that_does_not_parse_fails_its_notifications_only(settings):
    settings.PUSH_GATEWAY_URL = ""
    Template.objects.create(kind="like", channel="in_app", locale="", body="{% if %}")  # not through the API

    with pytest.raises(TemplateRenderError, match="does not parse"):
        deliveries_settle(tasks=[_task("n1", "1")])
    deliveries_settle(tasks=[_task("n2", "1", kind="follow", message="typed")])

    assert Notification.objects.get().notification_id == "n2"
