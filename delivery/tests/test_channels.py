"""Channels' failure classification, the backoff schedule and the failure guard."""

import random
import smtplib
from datetime import datetime, timezone

import pytest
from django.core import mail

from core.devbroker import free_port
from core.failures import backoff_delay
from core.messages import NotificationContent
from delivery.channels import (
    EmailChannel,
    Outgoing,
    PermanentChannelError,
    TransientChannelError,
    WebhookChannel,
)
from delivery.worker import FailureGuard

SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


def _outgoing(*, title: str = "", message: str = "Tito liked your post", **changes) -> Outgoing:
    content = NotificationContent(kind="like", sender="2", title=title, message=message, data={}, campaign_id=None,
                                  created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    return Outgoing(**{"notification_id": "n-1", "recipient": "1", "content": content, "email": "tito@example.com",
                       "push_secrets": (SECRET,), **changes})


@pytest.mark.parametrize(("path", "error"), [
    ("/ok", None),
    ("/down", TransientChannelError),
    ("/busy", TransientChannelError),
    ("/bad", PermanentChannelError),
])
def test_webhook_classifies_http_answers(webhook_receiver, path, error):
    channel = WebhookChannel()
    outgoing = _outgoing(push_endpoint=webhook_receiver.url + path)
    if error is None:
        channel.send(outgoing)
    else:
        with pytest.raises(error):
            channel.send(outgoing)

    [(_, key, body)] = webhook_receiver.requests_for(path)
    assert key == "n-1"  # receivers can drop a repeat
    assert b'"message":"Tito liked your post"' in body


def test_webhook_connection_refused_is_transient(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    with pytest.raises(TransientChannelError):
        WebhookChannel().send(_outgoing(push_endpoint=f"http://127.0.0.1:{free_port()}/"))


def test_webhook_uses_the_push_gateway_when_the_recipient_has_no_endpoint(webhook_receiver, settings):
    settings.PUSH_GATEWAY_URL = webhook_receiver.url + "/ok"
    settings.PUSH_GATEWAY_SECRET = SECRET

    WebhookChannel().send(_outgoing())

    assert len(webhook_receiver.requests_for("/ok")) == 1


def test_email_is_sent_through_the_configured_backend(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    EmailChannel().send(_outgoing(title="New follower"))

    [message] = mail.outbox
    assert (message.to, message.subject, message.body) == (["tito@example.com"], "New follower", "Tito liked your post")


class RefusingBackend:
    error: Exception

    def __init__(self, **kwargs):
        pass

    def send_messages(self, messages):
        raise self.error


@pytest.mark.parametrize(("error", "expected"), [
    (smtplib.SMTPRecipientsRefused({"x": (550, b"no such user")}), PermanentChannelError),
    (smtplib.SMTPResponseException(451, b"try later"), TransientChannelError),
    (smtplib.SMTPResponseException(554, b"rejected"), PermanentChannelError),
    (smtplib.SMTPServerDisconnected("gone"), TransientChannelError),
    (ConnectionRefusedError(), TransientChannelError),
])
def test_email_failures_are_classified(settings, error, expected):
    settings.EMAIL_BACKEND = f"{__name__}.RefusingBackend"
    RefusingBackend.error = error

    with pytest.raises(expected):
        EmailChannel().send(_outgoing())


def test_backoff_doubles_from_the_base_with_jitter():
    rng = random.Random(7)
    delays = [backoff_delay(attempt=n, first=1.0, factor=2.0, rng=rng) for n in (1, 2, 3)]

    for delay, nominal in zip(delays, (1, 2, 4)):
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    assert len({round(d / n, 6) for d, n in zip(delays, (1, 2, 4))}) == 3  # jittered, not identical


def test_failure_guard_waits_for_a_full_window():
    guard = FailureGuard(window=10, ratio=0.95)

    assert not guard.observe(failures=9, successes=0)
    assert guard.message == ""


def test_failure_guard_does_not_trip_below_the_ratio():
    guard = FailureGuard(window=10, ratio=0.95)

    assert not guard.observe(failures=9, successes=1)
    assert not guard.observe(failures=5, successes=1)  # the window slides: 9 of the last 10 failed


def test_failure_guard_trips_when_nearly_every_outcome_failed():
    guard = FailureGuard(window=10, ratio=0.95)
    guard.observe(failures=9, successes=1)

    assert guard.observe(failures=1, successes=0, last_error="HTTP 503 from gateway")
    assert "10 of the last 10" in guard.message and "HTTP 503 from gateway" in guard.message


def test_a_mail_server_that_never_answers_is_a_transient_failure_within_email_timeout(settings):
    """Django's SMTP backend waits forever by default: a silent server would hold a sender thread."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts the connection, never says a word
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 0.5
    started = time.monotonic()
    try:
        with pytest.raises(TransientChannelError, match="(?i)timed out|timeout"):
            EmailChannel().send(_outgoing())
    finally:
        silent.close()
    assert time.monotonic() - started < 5


def test_email_timeout_is_set_by_default():
    from django.conf import settings

    assert settings.EMAIL_TIMEOUT and settings.EMAIL_TIMEOUT <= 30
