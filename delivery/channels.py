"""External channels: each a small class with one `send`, whose failures say whether to retry.

`send` raises nothing but ChannelError: whatever the channel's library raises about one message is
classified transient (retried) or permanent (dead-lettered at once), and anything unexpected is an
UnexpectedChannelError (permanent), never a crash of the worker. The table is in the README.

The in-app inbox is not here: it is the worker's database transaction itself.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import string
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

import orjson
import urllib3
from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives
from standardwebhooks import Webhook

from core.messages import Channel, NotificationContent
from core.webhook_targets import (
    TargetRefused,
    TargetUnresolved,
    WebhookTarget,
    target_resolve,
)


class ChannelError(Exception):
    transient = False


class TransientChannelError(ChannelError):
    """Worth retrying: timeout, connection error, HTTP 5xx or 429, a refusing mail server."""

    transient = True


class PermanentChannelError(ChannelError):
    """Retrying cannot help: other HTTP 4xx, an invalid or refused address, a TLS certificate or
    protocol error."""


class UnexpectedChannelError(PermanentChannelError):
    """The channel's library raised something no rule classifies: dead-lettered with its type and
    message (replayable from the admin once understood), rather than stopping the worker."""


# Header values are visible ASCII. An id goes in a header with every other character (non-ASCII as
# UTF-8, space, control characters, and "%" itself) percent-encoded, so `urllib.parse.unquote` gives
# the id back and ASCII ids without "%" (every id our API makes) are sent unchanged.
_HEADER_SAFE = "".join(c for c in string.punctuation if c != "%")


def header_value(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


def single_line(text: str) -> str:
    """Text for a one-line header such as a subject: control and line-separator characters become
    spaces (a newline in a title would otherwise end the header, or let the title add headers)."""
    cleaned = "".join(" " if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} else c for c in text)
    return " ".join(cleaned.split())


def _tls_error(exc: BaseException) -> ChannelError:
    """A TLS failure. The handshake cut off (EOF, closed) is transient, like any dropped connection;
    everything else is the receiver's configuration (an untrusted, expired or wrong-name certificate,
    plain HTTP on an https URL, no common protocol or cipher), which no retry within seconds can fix:
    permanent, and the dead letter is replayable once the receiver is fixed."""
    reason = exc.args[0] if isinstance(exc, urllib3.exceptions.SSLError) and exc.args else exc
    if isinstance(reason, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return TransientChannelError(f"TLS connection closed: {reason}")
    return PermanentChannelError(f"TLS error: {reason}")


@dataclass(frozen=True)
class Outgoing:
    """What an external channel sends: one notification to one recipient, and where it receives it
    (read afresh for every attempt)."""

    notification_id: str
    recipient: str
    content: NotificationContent
    email: str = ""
    push_endpoint: str = ""
    push_secrets: tuple[str, ...] = field(default=(), repr=False)  # sign for push_endpoint; never in payloads or logs

    def payload(self) -> dict:
        """The webhook's JSON body, also what its channel deliveries store for their retries."""
        return self.content.payload(notification_id=self.notification_id, recipient=self.recipient)

    def as_json(self) -> bytes:
        return orjson.dumps(self.payload())


def webhook_signature(*, secrets: tuple[str, ...], message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` header: one `v1,<base64 HMAC-SHA256>` per secret,
    space-separated (a receiver accepts the message if any one matches)."""
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return " ".join(Webhook(secret).sign(message_id, when, body.decode()) for secret in secrets)


class ExternalChannel:
    """An external channel: `send` raises nothing but ChannelError, whatever its library raises."""

    name: str

    def send(self, outgoing: Outgoing) -> None:
        try:
            self._send(outgoing)
        except ChannelError:
            raise
        except Exception as exc:
            raise UnexpectedChannelError(f"unexpected {type(exc).__name__}: {exc}") from exc

    def _send(self, outgoing: Outgoing) -> None:
        raise NotImplementedError


class WebhookChannel(ExternalChannel):
    """HTTP POST of the notification as JSON to the recipient's push endpoint, or the push gateway,
    signed per the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

    A recipient's endpoint is resolved once and checked (delivery/webhook_targets.py), and the
    connection goes to a checked address with the name in Host and TLS. The operator's gateway is
    trusted as configured. Redirects are never followed.
    """

    name = Channel.WEBHOOK.value

    def __init__(self) -> None:
        self.http = urllib3.PoolManager(
            num_pools=64, maxsize=settings.CHANNEL_SEND_CONCURRENCY, retries=False,
            timeout=urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_SECONDS),
        )

    def _send(self, outgoing: Outgoing) -> None:
        if outgoing.push_endpoint:
            where, secrets = outgoing.push_endpoint, outgoing.push_secrets
            target = self._target(outgoing.push_endpoint)
        else:
            where, secrets, target = settings.PUSH_GATEWAY_URL, (settings.PUSH_GATEWAY_SECRET,), None
        if not any(secrets):
            raise PermanentChannelError(f"no signing secret for {where}")
        body = outgoing.as_json()
        message_id = header_value(outgoing.notification_id)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message_id,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhook_signature(
                secrets=tuple(s for s in secrets if s), message_id=message_id, timestamp=timestamp, body=body),
        }
        try:
            if target is None:
                response = self.http.request("POST", where, body=body, headers=headers, redirect=False,
                                             preload_content=False)
            else:
                response = self._post_to_checked_address(target, body=body, headers=headers)
            status = response.status
            # The status is all we need: the body is not read (a receiver dripping it byte by byte
            # would hold the send as long as it likes), and its connection is closed, not reused.
            response.close()
        except (urllib3.exceptions.SSLError, ssl.SSLError) as exc:
            raise _tls_error(exc) from exc
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.MaxRetryError, OSError) as exc:
            raise TransientChannelError(f"{type(exc).__name__}: {exc}") from exc
        except urllib3.exceptions.LocationValueError as exc:
            raise PermanentChannelError(f"invalid push endpoint {where!r}: {exc}") from exc
        if 200 <= status < 300:
            return
        if status >= 500 or status == 429:
            raise TransientChannelError(f"HTTP {status} from {where}")
        raise PermanentChannelError(f"HTTP {status} from {where}")

    @staticmethod
    def _target(url: str) -> WebhookTarget:
        try:
            return target_resolve(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS)
        except TargetRefused as exc:
            # Decided before any connection: the message cannot tell an open port from a closed one.
            raise PermanentChannelError(f"push endpoint refused: {exc}") from exc
        except TargetUnresolved as exc:
            raise TransientChannelError(str(exc)) from exc

    def _post_to_checked_address(self, target: WebhookTarget, *, body: bytes, headers: dict):
        """POST to the addresses the name resolved to (the next one only if connecting failed, so
        nothing was sent), never to a fresh lookup of the name."""
        tls = {"server_hostname": target.host} if target.scheme == "https" and not target.host_is_address else None
        headers = {**headers, "Host": target.host_header}
        for address in target.addresses[:-1]:
            try:
                return self._post(address, target, tls, body=body, headers=headers)
            except urllib3.exceptions.NewConnectionError:
                continue
        return self._post(target.addresses[-1], target, tls, body=body, headers=headers)

    def _post(self, address: str, target: WebhookTarget, tls: dict | None, *, body: bytes, headers: dict):
        pool = self.http.connection_from_host(address, port=target.port, scheme=target.scheme, pool_kwargs=tls)
        return pool.urlopen("POST", target.request_uri, body=body, headers=headers, redirect=False, retries=False,
                            assert_same_host=False, preload_content=False)


class EmailChannel(ExternalChannel):
    """The notification by email, through Django's email backend (EMAIL_URL)."""

    name = Channel.EMAIL.value

    def _send(self, outgoing: Outgoing) -> None:
        content = outgoing.content
        first_line = content.message.splitlines()[0] if content.message else ""
        subject = single_line(content.title or first_line or content.kind)[:120] or content.kind
        message = EmailMultiAlternatives(subject=subject, body=content.message, to=[outgoing.email],
                                         headers={"X-Notification-Id": header_value(outgoing.notification_id)})
        if content.html:  # rendered from an email template's html part
            message.attach_alternative(content.html, "text/html")
        try:
            message.send()
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentChannelError(f"address refused: {outgoing.email}") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientChannelError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise PermanentChannelError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. a non-ASCII address and no SMTPUTF8
            raise PermanentChannelError(f"SMTP: {exc}") from exc
        except (BadHeaderError, ValueError) as exc:  # an address or header the message cannot carry
            raise PermanentChannelError(f"cannot be sent by email: {exc}") from exc
        except ssl.SSLError as exc:
            raise _tls_error(exc) from exc
        except (smtplib.SMTPException, socket.timeout, OSError) as exc:
            raise TransientChannelError(f"{type(exc).__name__}: {exc}") from exc


def channels_available() -> list:
    return [WebhookChannel(), EmailChannel()]
