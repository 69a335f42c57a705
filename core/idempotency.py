"""Idempotency-Key for the POST endpoints that create things.

A repeat with the same key and body from the same client within 24 hours gets the original answer
and creates nothing; the same key with another body is a 422. The key row is claimed with one
INSERT ... ON CONFLICT (taking over only a key older than 24 hours) in the same transaction as the
request's own writes, so a concurrent repeat waits on the unique index until the first commits, then
replays its answer.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.response import Response

from core.fields import text_error
from core.models import IdempotencyKey

KEY_MAX_LENGTH = 255
KEY_LIFETIME = timedelta(hours=24)

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Up to 255 characters. A repeat with the same key and body within 24 hours gets the first answer.",
)


def idempotent(view_method):
    @functools.wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view_method(self, request, *args, **kwargs)
        if not key.strip() or len(key) > KEY_MAX_LENGTH or text_error(key):
            return Response({"Idempotency-Key": [f"Must be 1 to {KEY_MAX_LENGTH} characters, none of them NUL."]},
                            status=status.HTTP_400_BAD_REQUEST)
        scoped_key = f"{request.user.pk}:{key}"
        fingerprint = hashlib.sha256(b"%s %s\n%s" % (request.method.encode(), request.path.encode(), request.body)).hexdigest()
        now = timezone.now()
        with transaction.atomic():
            claimed = _claim(scoped_key=scoped_key, user_pk=request.user.pk, fingerprint=fingerprint, now=now)
            if claimed:
                response = view_method(self, request, *args, **kwargs)  # an exception rolls the key back too
                if response.status_code >= 500:
                    transaction.set_rollback(True)
                else:
                    IdempotencyKey.objects.filter(id=claimed).update(
                        response_status=response.status_code, response_body=response.data
                    )
                return response
            first = IdempotencyKey.objects.get(scoped_key=scoped_key)
        if first.request_fingerprint != fingerprint:
            return Response({"detail": "This Idempotency-Key was used with another request body."},
                            status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        return Response(first.response_body, status=first.response_status, headers={"Idempotent-Replayed": "true"})

    wrapper.idempotent = True  # the schema documents its 422
    return wrapper


def _claim(*, scoped_key: str, user_pk: int, fingerprint: str, now) -> int | None:
    """Claim the key in one statement: a new key, or one older than KEY_LIFETIME taken over (its old
    answer forgotten). Returns the row's id, or None when a live claim holds it (a concurrent repeat
    waits here on the unique index until the first commits)."""
    table = connection.ops.quote_name(IdempotencyKey._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS k (scoped_key, user_id, request_fingerprint, created_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (scoped_key) DO UPDATE SET user_id = EXCLUDED.user_id, "
            "request_fingerprint = EXCLUDED.request_fingerprint, created_at = EXCLUDED.created_at, "
            "response_status = NULL, response_body = NULL WHERE k.created_at < %s RETURNING id",
            [scoped_key, user_pk, fingerprint, now, now - KEY_LIFETIME],
        )
        row = cursor.fetchone()
    return row[0] if row else None
