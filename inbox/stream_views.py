"""GET /api/v1/recipients/<id>/notifications/stream/: the live inbox as Server-Sent Events.

An async view, to be served by an ASGI server (uvicorn): each open stream costs a coroutine, not
a worker. Authenticated like the rest of the API (service token, staff session, or the recipient's
own token); browsers' EventSource cannot send headers, so `?access_token=<recipient token>` works too.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import APIException
from rest_framework.request import Request

from inbox.models import Recipient
from inbox.stream import sse_events
from notifications_project.fields import event_id_parse
from notifications_project.permissions import is_service_or_staff
from notifications_project.recipient_tokens import RecipientPrincipal, RecipientTokenAuthentication, recipient_token_read


def _authorize(request, recipient_id: str) -> tuple[int, JsonResponse | None]:
    """(recipient pk, None) when the caller may stream this inbox, else (0, the error response)."""
    token = request.GET.get("access_token")
    if token:
        try:
            if recipient_token_read(token) != recipient_id:
                return 0, JsonResponse({"detail": "Not found."}, status=404)
        except APIException as exc:
            return 0, JsonResponse({"detail": str(exc.detail)}, status=401)
    else:
        drf_request = Request(request, authenticators=[TokenAuthentication(), RecipientTokenAuthentication(),
                                                       SessionAuthentication()])
        try:
            user = drf_request.user
        except APIException as exc:
            return 0, JsonResponse({"detail": str(exc.detail)}, status=401)
        if isinstance(user, RecipientPrincipal):
            if user.recipient_id != recipient_id:
                return 0, JsonResponse({"detail": "Not found."}, status=404)
        elif not user.is_authenticated:
            return 0, JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
        elif not is_service_or_staff(drf_request):
            return 0, JsonResponse({"detail": "A service token or a staff login is required."}, status=403)
    recipient, _ = Recipient.objects.get_or_create(external_id=recipient_id)
    return recipient.pk, None


async def notification_stream(request, recipient_id: str):
    try:
        last_event_id = event_id_parse(request.headers.get("Last-Event-ID") or request.GET.get("last_event_id"))
    except ValueError as exc:
        return JsonResponse({"Last-Event-ID": [str(exc)]}, status=400)
    recipient_pk, refused = await sync_to_async(_authorize)(request, recipient_id)
    if refused is not None:
        return refused
    response = StreamingHttpResponse(sse_events(recipient_pk=recipient_pk, last_event_id=last_event_id),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response
