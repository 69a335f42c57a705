"""API behaviour shared by every app: JSON 404s, pagination."""

from django.http import JsonResponse
from rest_framework.pagination import CursorPagination


def api_not_found(request, *args, **kwargs):
    """Unknown routes under /api/ answer JSON, not Django's HTML page."""
    return JsonResponse({"detail": f"No API route matches {request.path}."}, status=404)


class NewestFirstCursorPagination(CursorPagination):
    """Opaque cursor over the primary key: no skipped or repeated items while new rows arrive."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
