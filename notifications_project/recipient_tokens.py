"""End-user tokens: signed, expiring, for one recipient (`Authorization: Bearer <token>`).

Issued by a service for its user's client, which may then read, mark and stream only that
recipient's inbox and preferences. Signed with SECRET_KEY (django.core.signing): nothing stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

SALT = "notifications.recipient-token"


@dataclass(frozen=True)
class RecipientPrincipal:
    """The caller of a request made with a recipient token (DRF's request.user)."""

    recipient_id: str
    token: str
    is_authenticated: bool = True
    is_staff: bool = False
    pk: None = None

    @property
    def throttle_key(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()[:32]


def recipient_token_issue(*, recipient_id: str, ttl: timedelta | None = None) -> tuple[str, datetime]:
    expires_at = timezone.now() + (ttl or timedelta(seconds=settings.RECIPIENT_TOKEN_TTL_SECONDS))
    # The nonce makes each token distinct (its own throttle bucket), even for one recipient and second.
    payload = {"r": recipient_id, "exp": int(expires_at.timestamp()), "n": secrets.token_urlsafe(6)}
    token = signing.dumps(payload, salt=SALT, compress=True)
    return token, expires_at


def recipient_token_read(token: str) -> str:
    """The recipient id a valid, unexpired token is for; raises AuthenticationFailed otherwise."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise exceptions.AuthenticationFailed("Invalid recipient token.") from None
    if not isinstance(payload, dict) or payload.get("exp", 0) < timezone.now().timestamp():
        raise exceptions.AuthenticationFailed("Recipient token expired: ask the service for a new one.")
    return payload["r"]


class RecipientTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Use: Authorization: Bearer <token>.")
        token = header[1].decode(errors="replace")
        return RecipientPrincipal(recipient_id=recipient_token_read(token), token=token), token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
