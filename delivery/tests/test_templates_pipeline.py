"""Templates through the real processes: a like sent without a message lands in the recipient's
language, and a template that fails at render time dead-letters its notification alone."""

import pytest

from conftest import wait_until
from core.models import DeadLetter
from delivery.models import Delivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline

SEND = "/api/v1/notifications/"
TEMPLATES = "/api/v1/templates/"


def _send(client, recipient: str, **fields) -> str:
    response = client.post(SEND, {"sender": "tito", "recipient": recipient, "kind": "like", **fields}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def test_a_like_without_a_message_lands_in_the_recipients_language(stack, service_client):
    Recipient.objects.create(external_id="anna", locale="de-AT")
    Recipient.objects.create(external_id="jean", locale="fr")
    for locale, title, body in [("", "New like", "{{ actor }} liked {{ data.post }}"),
                                ("de", "Neues Like", "{{ actor }} gefällt {{ data.post }}")]:
        assert service_client.post(TEMPLATES, {"kind": "like", "channel": "in_app", "locale": locale, "title": title,
                                               "body": body}, format="json").status_code == 201
    for command in ("run_relay", "run_worker"):
        stack.start(command)

    german = _send(service_client, "anna", data={"post": "dein Foto"})
    default = _send(service_client, "jean", data={"post": "ta photo"})

    wait_until(lambda: Notification.objects.count() == 2, what="both delivered")
    rows = {n.notification_id: (n.title, n.message) for n in Notification.objects.all()}
    assert rows == {german: ("Neues Like", "tito gefällt dein Foto"), default: ("New like", "tito liked ta photo")}


def test_a_template_failing_at_render_time_dead_letters_one_and_the_next_is_delivered(stack, service_client):
    assert service_client.post(TEMPLATES, {"kind": "like", "channel": "in_app",
                                           "body": "{{ data.likes | divided_by: data.days }} likes a day"},
                               format="json").status_code == 201
    stack.start("run_relay")
    worker = stack.start("run_worker")

    failing = _send(service_client, "mia", data={"likes": 10, "days": 0})
    following = _send(service_client, "mia", data={"likes": 10, "days": 5})
    typed = _send(service_client, "mia", message="Typed by hand")

    wait_until(lambda: Notification.objects.count() == 2, what="the other two delivered")
    assert set(Notification.objects.values_list("message", flat=True)) == {"2 likes a day", "Typed by hand"}
    [letter] = DeadLetter.objects.all()
    assert letter.notification_id == failing and letter.reason == "processing failed"
    assert "(like, in_app, default), body: divided_by: can't divide by 0" in letter.error
    assert Delivery.objects.get(notification_id=failing).outcome == "failed"
    assert {following, typed} == set(Notification.objects.values_list("notification_id", flat=True))
    assert worker.poll() is None, "the worker is still running"
