"""External channels: each a small class with one `send`, whose failures say whether to retry.

The in-app inbox is not here: it is the worker's database transaction itself.
"""

from __future__ import annotations

import smtplib
import socket
from dataclasses import dataclass, field

import orjson
import urllib3
from django.conf import settings
from django.core.mail import EmailMessage

WEBHOOK = "webhook"
EMAIL = "email"


class ChannelError(Exception):
    transient = False


class TransientChannelError(ChannelError):
    """Worth retrying: timeout, connection error, HTTP 5xx or 429, a refusing mail server."""

    transient = True


class PermanentChannelError(ChannelError):
    """Retrying cannot help: other HTTP 4xx, an invalid address."""


@dataclass(frozen=True)
class Outgoing:
    """What an external channel sends: the notification and where its recipient receives it."""

    notification_id: str
    recipient: str
    kind: str
    message: str
    title: str = ""
    sender: str = ""
    data: dict = field(default_factory=dict)
    campaign_id: int | None = None
    created_at: str = ""
    email: str = ""
    push_endpoint: str = ""

    def content(self) -> dict:
        """What is stored with a channel delivery for its retries (the address is read afresh)."""
        return {
            "notification_id": self.notification_id, "recipient": self.recipient, "kind": self.kind,
            "message": self.message, "title": self.title, "sender": self.sender, "data": self.data,
            "campaign_id": self.campaign_id, "created_at": self.created_at,
        }

    @classmethod
    def from_content(cls, content: dict, *, email: str, push_endpoint: str) -> "Outgoing":
        return cls(**content, email=email, push_endpoint=push_endpoint)

    def as_json(self) -> bytes:
        return orjson.dumps({
            "id": self.notification_id, "recipient": self.recipient, "kind": self.kind, "sender": self.sender,
            "title": self.title, "message": self.message, "data": self.data, "campaign": self.campaign_id,
            "created_at": self.created_at,
        })


class WebhookChannel:
    """HTTP POST of the notification as JSON to the recipient's push endpoint, or the push gateway."""

    name = WEBHOOK

    def __init__(self) -> None:
        self.http = urllib3.PoolManager(
            num_pools=64, maxsize=settings.CHANNEL_SEND_CONCURRENCY, retries=False,
            timeout=urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_SECONDS),
        )

    @staticmethod
    def address(*, push_endpoint: str, email: str) -> str:
        return push_endpoint or settings.PUSH_GATEWAY_URL

    def send(self, outgoing: Outgoing) -> None:
        url = self.address(push_endpoint=outgoing.push_endpoint, email=outgoing.email)
        try:
            response = self.http.request(
                "POST", url, body=outgoing.as_json(),
                headers={"Content-Type": "application/json", "Idempotency-Key": outgoing.notification_id},
            )
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.MaxRetryError, OSError) as exc:
            raise TransientChannelError(f"{type(exc).__name__}: {exc}") from exc
        except urllib3.exceptions.LocationValueError as exc:
            raise PermanentChannelError(f"invalid push endpoint {url!r}: {exc}") from exc
        status = response.status
        if 200 <= status < 300:
            return
        if status >= 500 or status == 429:
            raise TransientChannelError(f"HTTP {status} from {url}")
        raise PermanentChannelError(f"HTTP {status} from {url}")


class EmailChannel:
    """The notification by email, through Django's email backend (EMAIL_URL)."""

    name = EMAIL

    @staticmethod
    def address(*, push_endpoint: str, email: str) -> str:
        return email

    def send(self, outgoing: Outgoing) -> None:
        first_line = outgoing.message.splitlines()[0] if outgoing.message else ""
        subject = (outgoing.title or first_line or outgoing.kind)[:120]
        message = EmailMessage(subject=subject, body=outgoing.message, to=[outgoing.email],
                               headers={"X-Notification-Id": outgoing.notification_id})
        try:
            message.send()
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentChannelError(f"address refused: {outgoing.email}") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientChannelError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise PermanentChannelError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except (smtplib.SMTPException, socket.timeout, OSError) as exc:
            raise TransientChannelError(f"{type(exc).__name__}: {exc}") from exc


def channels_available() -> list:
    return [WebhookChannel(), EmailChannel()]


def channels_for(*, push_endpoint: str, email: str) -> list[str]:
    """The external channels a recipient has."""
    return [c.name for c in (WebhookChannel, EmailChannel) if c.address(push_endpoint=push_endpoint, email=email)]
