"""Channel faults through the real pipeline: a TLS error, an id that is not Latin-1, a title with a
newline, and an endpoint aimed inward each settle their own send (delivered or dead-lettered as
classified) while the worker stays up and delivers what comes next. Webhooks arrive signed."""

import uuid
from urllib.parse import unquote

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from conftest import TEST_PUSH_GATEWAY_SECRET, wait_until
from core import broker
from core.messages import NotificationTask
from core.models import DeadLetter
from delivery.channels import header_value
from delivery.models import ChannelDelivery
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.pipeline


def _send(client, recipient: str, message: str = "hello") -> str:
    answer = client.post("/api/v1/notifications/", {"sender": "s", "recipient": recipient, "kind": "like",
                                                    "message": message}, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def _status(notification_id: str, channel: str = "webhook") -> str | None:
    row = ChannelDelivery.objects.filter(notification_id=notification_id, channel=channel).first()
    return row.status if row else None


def _campaign(client, title: str, ids: list[str]) -> int:
    answer = client.post("/api/v1/campaigns/", {"title": title, "body": "20% off",
                                                "segment": {"type": "USER_IDS", "ids": ids}}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()["id"]


def test_a_tls_error_dead_letters_that_send_only(stack, service_client, webhook_receiver):
    """https:// to a plain-HTTP port: the handshake fails (permanent), the other sends of the batch
    are recorded as sent, and the worker goes on."""
    Recipient.objects.create(external_id="tls", push_endpoint=webhook_receiver.url.replace("http:", "https:") + "/tls")
    for i in range(5):
        Recipient.objects.create(external_id=f"ok{i}", push_endpoint=f"{webhook_receiver.url}/ok")
    stack.start("run_relay")
    worker = stack.start("run_worker")

    broken = _send(service_client, "tls")
    others = [_send(service_client, f"ok{i}") for i in range(5)]

    wait_until(lambda: _status(broken) == "dead", timeout=30, what="the TLS send dead-lettered")
    wait_until(lambda: all(_status(n) == "sent" for n in others), what="the other sends recorded as sent")
    [letter] = DeadLetter.objects.filter(notification_id=broken)
    assert (letter.reason, letter.attempts) == ("permanent failure", 1) and "TLS error" in letter.error
    assert webhook_receiver.requests_for("/tls") == []  # the plain server saw a handshake, not a request
    assert Notification.objects.filter(notification_id=broken).exists()  # the inbox has it anyway

    after = _send(service_client, "ok0", "after")
    wait_until(lambda: _status(after) == "sent", what="the next notification")
    assert worker.poll() is None


def test_ids_that_are_not_latin_1_reach_the_receiver_encoded_and_signed(stack, service_client, webhook_receiver):
    """A campaign to a recipient "用户1" (its id "<campaign>:用户1"), and the same straight from a plain
    Kafka producer with an id no header could carry: delivered, percent-encoded, verifiable."""
    secrets = service_client.post("/api/v1/recipients/", [
        {"id": "用户1", "push_endpoint": f"{webhook_receiver.url}/cn"},
        {"id": "plain", "push_endpoint": f"{webhook_receiver.url}/plain"},
    ], format="json").json()["push_secrets"]
    for command in ("run_relay", "run_dispatcher"):
        stack.start(command)
    worker = stack.start("run_worker")

    campaign_id = _campaign(service_client, "Sale", ["用户1", "plain"])
    raw = NotificationTask(notification_id=f"raw:用户1:{uuid.uuid4()}\r\nX-Evil: 1", recipient="用户1", kind="like",
                           sender="s", message="straight from a producer", created_at=timezone.now().isoformat())
    producer = broker.producer_create()
    producer.send(broker.topic_name(broker.NOTIFICATIONS_SEND), key="用户1".encode(), value=raw.encode())
    producer.flush(timeout=30)
    producer.close()

    ids = [f"{campaign_id}:用户1", f"{campaign_id}:plain", raw.notification_id]
    wait_until(lambda: all(_status(n) == "sent" for n in ids), timeout=60, what="the three webhooks sent")
    received = webhook_receiver.received_for("/cn")
    assert sorted(unquote(h["webhook-id"]) for h, _ in received) == sorted([ids[0], ids[2]])
    for headers, body in received:
        assert headers["Idempotency-Key"] == headers["webhook-id"] == header_value(unquote(headers["webhook-id"]))
        assert headers["webhook-id"].isascii() and headers["webhook-id"].isprintable()
        assert "X-Evil" not in headers
        Webhook(secrets["用户1"]).verify(body, headers)
    [(headers, body)] = webhook_receiver.received_for("/plain")
    Webhook(secrets["plain"]).verify(body, headers)
    assert DeadLetter.objects.count() == 0 and worker.poll() is None


def test_a_title_with_a_newline_is_emailed_on_one_subject_line(stack, service_client, tmp_path):
    Recipient.objects.create(external_id="mail", email="mail@example.com")
    mailbox = tmp_path / "mail"
    for command in ("run_relay", "run_dispatcher"):
        stack.start(command)
    worker = stack.start("run_worker", env={"EMAIL_URL": f"filemail:///{mailbox}"})

    first = _campaign(service_client, "Sale\nBcc: everyone@example.com", ["mail"])
    wait_until(lambda: _status(f"{first}:mail", "email") == "sent", timeout=60, what="the email sent")
    second = _campaign(service_client, "Next sale", ["mail"])
    wait_until(lambda: _status(f"{second}:mail", "email") == "sent", timeout=60, what="the next email sent")

    text = "".join(path.read_text() for path in mailbox.iterdir())
    assert "Subject: Sale Bcc: everyone@example.com\n" in text and "\nBcc:" not in text
    assert "Subject: Next sale\n" in text
    assert DeadLetter.objects.count() == 0 and worker.poll() is None


def test_an_endpoint_aimed_inward_is_refused_at_send_time(stack, service_client, webhook_receiver):
    """Stored without the API (an old row, the database itself): the worker refuses it, connects to
    nothing, and goes on. The operator's gateway on the same machine is trusted as configured."""
    Recipient.objects.create(external_id="inward", push_endpoint=f"{webhook_receiver.url}/inward")
    Recipient.objects.create(external_id="gw")
    stack.start("run_relay")
    worker = stack.start("run_worker", env={"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "false",
                                            "PUSH_GATEWAY_URL": f"{webhook_receiver.url}/gateway"})

    refused = _send(service_client, "inward")
    via_gateway = _send(service_client, "gw")

    wait_until(lambda: _status(refused) == "dead", timeout=30, what="the inward send refused")
    wait_until(lambda: _status(via_gateway) == "sent", what="the gateway send")
    [letter] = DeadLetter.objects.filter(notification_id=refused)
    assert letter.error == "push endpoint refused: 127.0.0.1 is a loopback address" and letter.attempts == 1
    assert webhook_receiver.requests_for("/inward") == []
    [(headers, body)] = webhook_receiver.received_for("/gateway")
    Webhook(TEST_PUSH_GATEWAY_SECRET).verify(body, headers)
    assert worker.poll() is None
