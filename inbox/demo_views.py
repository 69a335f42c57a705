"""GET /demo/inbox/?recipient=<id>: the drop-in web inbox (<notification-inbox>) on a page of its own,
for staff. It shows what a product's page does: its server asks for a recipient token, the page hands
it to the element, and asks again when the element says the token is about to expire."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.messages import RECIPIENT_ID_REGEX
from inbox.authentication import recipient_token_issue


@require_GET
@staff_member_required
def demo_inbox(request):
    recipient = request.GET.get("recipient", "")
    context = {"recipient": recipient, "error": ""}
    if not recipient:
        return render(request, "inbox/demo.html", context)
    if not re.fullmatch(RECIPIENT_ID_REGEX, recipient) or "\x00" in recipient:
        context.update(recipient="", error="recipient: 1-128 characters, no white space or slash.")
        return render(request, "inbox/demo.html", context, status=400)
    token, expires_at = recipient_token_issue(recipient_id=recipient)
    api_url = request.build_absolute_uri("/api/v1")
    stream_url = f"{settings.STREAM_URL.rstrip('/')}/api/v1" if settings.STREAM_URL else api_url
    origin = request.build_absolute_uri("/").rstrip("/")
    context.update(
        token=token,
        expires_at=expires_at.isoformat(),
        api_url=api_url,
        stream_url=stream_url,
        # A stream on another origin answers this page only if CORS_ALLOWED_ORIGINS names it.
        cors_missing=not stream_url.startswith(origin + "/") and origin not in settings.CORS_ALLOWED_ORIGINS,
        origin=origin,
    )
    return render(request, "inbox/demo.html", context)
