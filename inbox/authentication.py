"""End-user tokens: signed, expiring, for one recipient (`Authorization: Bearer <token>`).

Issued by a service for its user's client, which may then read, mark and stream only that
recipient's inbox and preferences. Signed with SECRET_KEY (django.core.signing). A token carries
a fingerprint of the recipient's key and its `token_generation` (an HMAC: the payload is signed,
not encrypted, and the key is not the client's to read), checked on every use with one lookup of
the recipient by its unique id: deleting the recipient or revoking its tokens (the generation goes
up) ends every token issued before, and a recipient created again under the same id has a new
key, so old tokens stay dead.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

SALT = "notifications.recipient-token"


@dataclass(frozen=True)
class RecipientPrincipal:
    """The caller of a request made with a recipient token (DRF's request.user)."""

    recipient_id: str
    token: str
    recipient_pk: int = 0
    token_generation: int = 0
    is_authenticated: bool = True
    is_staff: bool = False
    pk: None = None

    @property
    def throttle_key(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()[:32]


def recipient_token_issue(*, recipient_id: str, ttl: timedelta | None = None) -> tuple[str, datetime]:
    """A token for the recipient's own client; creates the recipient if the product has not
    registered it yet (only services issue tokens)."""
    from inbox.models import Recipient

    recipient, _ = Recipient.objects.get_or_create(external_id=recipient_id)
    expires_at = timezone.now() + (ttl or timedelta(seconds=settings.RECIPIENT_TOKEN_TTL_SECONDS))
    # The nonce makes each token distinct (its own throttle bucket), even for one recipient and second.
    payload = {"r": recipient_id, "g": _generation_fingerprint(recipient.pk, recipient.token_generation),
               "exp": int(expires_at.timestamp()), "n": secrets.token_urlsafe(6)}
    token = signing.dumps(payload, salt=SALT, compress=True)
    return token, expires_at


def recipient_token_read(token: str) -> RecipientPrincipal:
    """The caller a valid, unexpired, unrevoked token stands for; raises AuthenticationFailed otherwise."""
    from inbox.models import Recipient

    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise exceptions.AuthenticationFailed("Invalid recipient token.") from None
    if not (isinstance(payload, dict) and isinstance(payload.get("r"), str) and isinstance(payload.get("g"), str)
            and isinstance(payload.get("exp"), int)):
        raise exceptions.AuthenticationFailed("Invalid recipient token.")
    if payload["exp"] < timezone.now().timestamp():
        raise exceptions.AuthenticationFailed("Recipient token expired: ask the service for a new one.")
    recipient = Recipient.objects.filter(external_id=payload["r"]).values_list("pk", "token_generation").first()
    if recipient is None or not constant_time_compare(_generation_fingerprint(*recipient), payload["g"]):
        raise exceptions.AuthenticationFailed("Recipient token revoked: ask the service for a new one.")
    return RecipientPrincipal(recipient_id=payload["r"], token=token, recipient_pk=recipient[0],
                              token_generation=recipient[1])


def _generation_fingerprint(recipient_pk: int, token_generation: int) -> str:
    return salted_hmac(f"{SALT}.generation", f"{recipient_pk}:{token_generation}").hexdigest()[:24]


class RecipientTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Use: Authorization: Bearer <token>.")
        token = header[1].decode(errors="replace")
        return recipient_token_read(token), token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
