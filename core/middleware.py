from django.conf import settings
from django.http import JsonResponse
from rest_framework.exceptions import ValidationError

from core.fields import PATH_ID_FIELDS, text_error


class RequestBodyLimitMiddleware:
    """Refuse bodies over the limit before anything reads them: REQUEST_BODY_MAX_BYTES, or a view's
    own `max_body_bytes` (the recipient directory's bulk upsert takes larger bodies).

    DRF's JSON parser reads the raw stream and so never meets Django's DATA_UPLOAD_MAX_MEMORY_SIZE.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
        limit = getattr(view_class, "max_body_bytes", settings.REQUEST_BODY_MAX_BYTES)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
        if length > limit:
            return JsonResponse({"detail": f"Request body is {length} bytes; the limit is {limit} bytes."}, status=400)
        return None


class RequestInputMiddleware:
    """Path ids and query parameters follow the rules of the ids and text in bodies, for every route:
    an id with white space, '/', over 128 characters or with a NUL, or a NUL in any query parameter,
    is a 400 naming it, before the view (or the database) sees it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        errors = {}
        for name, value in view_kwargs.items():
            field = PATH_ID_FIELDS.get(name)
            if field is not None:
                try:
                    field.run_validation(value)
                except ValidationError as exc:
                    errors[name] = exc.detail
        for name, values in request.GET.lists():
            problems = [p for p in (text_error(name), *(text_error(v) for v in values)) if p]
            if problems:
                errors[name] = problems[:1]
        if errors:
            return JsonResponse(errors, status=400)
        return None
