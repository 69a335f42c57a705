"""Service tokens (`Authorization: Token <key>`, DRF's), remembered per process but never trusted
without the database; and end-user tokens: signed, expiring, for one recipient (`Authorization:
Bearer <token>`).

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
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import connection
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token

from core.db import Condition

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


# --- Service tokens --------------------------------------------------------------------------------
# DRF's TokenAuthentication loads the token and its user on every request (a joined SELECT and two
# model instances). Here a process remembers the tokens it has seen (by the key's SHA-256), and every
# use is still checked against the database, so a token deleted or rotated (`issue_token` deletes
# the old one) or a user deactivated is refused on its next request in every process:
#   - on most routes by one lean query (the key still exists, for that user, and the user is active);
#   - on the send routes (`token_checked_in_statement = True`), by the accepted notification's own
#     INSERT (`... WHERE EXISTS (that token)`): no round trip of its own. Whatever else such a request
#     answers (a 400, a 429, an Idempotency-Key replay, a held notification) checks the token first.
# A token that fails a check is forgotten. Nothing is ever answered from the memory alone.

SERVICE_TOKENS_REMEMBERED = 1024
_service_tokens: dict[str, Token] = {}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def service_token_condition(token: Token) -> Condition:
    """Holds while `token` exists for its user and that user is active (an SQL condition that a
    statement can carry)."""
    user_table = connection.ops.quote_name(get_user_model()._meta.db_table)
    token_table = connection.ops.quote_name(Token._meta.db_table)
    return Condition(
        sql=f"EXISTS (SELECT 1 FROM {token_table} t JOIN {user_table} u ON u.id = t.user_id "
            "WHERE t.key = %s AND t.user_id = %s AND u.is_active)",
        params=[token.key, token.user_id],
    )


def service_tokens_forget() -> None:
    _service_tokens.clear()


class ServiceTokenAuthentication(TokenAuthentication):
    """DRF's token authentication with the tokens remembered per process (see above)."""

    def authenticate(self, request):
        self.request = request  # DRF makes one authenticator per request
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        digest = _digest(key)
        token = _service_tokens.get(digest)
        if token is not None:
            view = self.request.parser_context.get("view") if self.request.parser_context else None
            if getattr(view, "token_checked_in_statement", False):
                self.request.service_token_unchecked = token  # its write checks it (service_token_check)
                return token.user, token
            if service_token_condition(token).holds():
                return token.user, token
            _service_tokens.pop(digest, None)
        user, token = super().authenticate_credentials(key)  # DRF's lookup and messages (401)
        if len(_service_tokens) >= SERVICE_TOKENS_REMEMBERED:
            _service_tokens.pop(next(iter(_service_tokens)), None)
        _service_tokens[digest] = token
        return user, token


def service_token_unchecked(request) -> Condition | None:
    """The condition a write of this request must carry, when its service token came from memory
    unchecked; None when there is nothing to check."""
    token = getattr(request, "service_token_unchecked", None)
    return service_token_condition(token) if token is not None else None


def service_token_check(request) -> None:
    """Check now a service token this request took from memory unchecked; 401 when it is no longer
    valid (deleted, rotated, its user inactive)."""
    token = getattr(request, "service_token_unchecked", None)
    if token is None:
        return
    if not service_token_condition(token).holds():
        service_token_refused(request)
    request.service_token_unchecked = None


def service_token_refused(request):
    """Forget the request's token and answer 401 (the check of its statement failed)."""
    token = getattr(request, "service_token_unchecked", None)
    if token is not None:
        _service_tokens.pop(_digest(token.key), None)
        request.service_token_unchecked = None
    raise exceptions.AuthenticationFailed("Invalid token.")
