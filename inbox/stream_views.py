"""GET /api/v1/recipients/<id>/notifications/stream/: the live inbox as Server-Sent Events.

An async view, served by an ASGI server (uvicorn in production, daphne under `manage.py
runserver`): each open stream costs a coroutine, not a worker. A sync server (gunicorn) answers
at once with a 421 that names STREAM_URL: a stream there would hold a worker for as long as it is
open. Authenticated like the rest of the API (service token, staff session, or the recipient's
own token); browsers' EventSource cannot send headers, so `?access_token=<recipient token>` works too.
"""

from __future__ import annotations

import re

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import JsonResponse, StreamingHttpResponse
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException
from rest_framework.request import Request

from core.messages import RECIPIENT_ID_REGEX
from inbox.authentication import (
    RecipientPrincipal,
    RecipientTokenAuthentication,
    ServiceTokenAuthentication,
    recipient_token_read,
)
from inbox.models import Recipient
from inbox.permissions import is_service_or_staff
from inbox.stream import newest_notification_id, sse_events

EVENT_ID_MAX = 2**63 - 1  # inbox row ids are bigint


def _served_elsewhere(request) -> JsonResponse:
    if settings.STREAM_URL:
        url = settings.STREAM_URL.rstrip("/") + request.path
        return JsonResponse({"detail": f"Live streams are not served on this server; open {url}", "stream_url": url},
                            status=421)
    return JsonResponse({"detail": "Live streams are not served on this server, but by the ASGI server (uvicorn)."},
                        status=421)


def _last_event_id(request) -> int | None:
    """The Last-Event-ID header (or ?last_event_id=); raises ValueError when it is not a row id."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if not raw:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", raw) or int(raw) > EVENT_ID_MAX:
        raise ValueError(raw)
    return int(raw)


def _caller(request) -> tuple[RecipientPrincipal | None, JsonResponse | None]:
    """(the recipient token's principal, or None for a service or staff, None) when authenticated,
    else (None, the error response)."""
    token = request.GET.get("access_token")
    try:
        if token:
            return recipient_token_read(token), None
        drf_request = Request(request, authenticators=[ServiceTokenAuthentication(), RecipientTokenAuthentication(),
                                                       SessionAuthentication()])
        user = drf_request.user
    except APIException as exc:
        return None, JsonResponse({"detail": str(exc.detail)}, status=401)
    if isinstance(user, RecipientPrincipal):
        return user, None
    if not user.is_authenticated:
        return None, JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    if not is_service_or_staff(drf_request):
        return None, JsonResponse({"detail": "A service token or a staff login is required."}, status=403)
    return None, None


def _open(request, recipient_id: str, last_event_id: int | None) -> tuple[dict | None, JsonResponse | None]:
    """(what the stream starts from, None) when the caller may stream this inbox, else (None, the
    error response). Closes its database connection: a waiting stream holds none."""
    try:
        principal, refused = _caller(request)
        if refused is not None:
            return None, refused
        if principal is not None:
            if principal.recipient_id != recipient_id:
                return None, JsonResponse({"detail": "Not found."}, status=404)
            recipient_pk, generation = principal.recipient_pk, principal.token_generation
        else:
            recipient_pk, generation = Recipient.objects.get_or_create(external_id=recipient_id)[0].pk, None
        cursor = last_event_id if last_event_id is not None else newest_notification_id(recipient_pk)
        return {"recipient_pk": recipient_pk, "cursor": cursor, "token_generation": generation}, None
    finally:
        connection.close()


async def notification_stream(request, recipient_id: str):
    if not isinstance(request, ASGIRequest):
        return _served_elsewhere(request)
    if not re.fullmatch(RECIPIENT_ID_REGEX, recipient_id) or "\x00" in recipient_id:
        return JsonResponse({"recipient_id": ["1-128 characters, no white space or slash."]}, status=400)
    try:
        last_event_id = _last_event_id(request)
    except ValueError:
        return JsonResponse({"Last-Event-ID": ["An event id of this stream (digits)."]}, status=400)
    start, refused = await sync_to_async(_open)(request, recipient_id, last_event_id)
    if refused is not None:
        return refused
    response = StreamingHttpResponse(sse_events(**start), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response
