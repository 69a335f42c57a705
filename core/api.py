"""API behaviour shared by every app: JSON 404s, the JSON parser, pagination."""

import json
import re

import orjson
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings

from core.fields import INT64_MAX, json_value_problem


@csrf_exempt  # whatever the method: a POST to an unknown route is a 404, not Django's CSRF page
def api_not_found(request, *args, **kwargs):
    """Unknown routes under /api/ answer JSON, not Django's HTML page."""
    return JsonResponse({"detail": f"No API route matches {request.path}."}, status=404)


class FieldsBuiltOnce:
    """For the input serializers of the hot path (a send). DRF deep-copies and binds every declared
    field for every serializer it makes, which was a third of a send's time in its view. The fields
    of these serializers keep no state between uses and read no context, so each class builds its
    bound fields once. Not for serializers with `partial`, `context`-dependent or nested fields."""

    @property
    def fields(self):
        cls = type(self)
        built = cls.__dict__.get("_fields_built_once")
        if built is None:
            built = super().fields
            cls._fields_built_once = built
        return built


class StorableJSONParser(JSONParser):
    """JSON bodies that PostgreSQL and our encoders can carry, or a 400 naming the field.

    orjson refuses malformed JSON, lone surrogates, NaN and Infinity, and nesting deeper than 1024
    levels without recursing; `json_value_problem` then bounds depth, text and numbers. A body of
    10,000 nested arrays is a 400 before anything recurses into it.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            value = _lenient_loads(raw, exc)  # to name the field holding a lone surrogate, NaN or Infinity
        if problem := json_value_problem(value):
            path, message = problem
            field = path[0] if path and isinstance(path[0], str) else api_settings.NON_FIELD_ERRORS_KEY
            raise ValidationError({field: [message]})
        return value


def _lenient_loads(raw: bytes, error: orjson.JSONDecodeError):
    """The standard library's reading of a body orjson refused (it allows lone surrogates, NaN and
    Infinity, which `json_value_problem` then names), or the ParseError. Never for nesting: orjson
    refused that already, and the standard library would recurse."""
    if "depth" not in str(error):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            pass
    raise ParseError(f"JSON parse error: {error}")


_POSITION = re.compile(r"-?[0-9]{1,19}")


class NewestFirstCursorPagination(CursorPagination):
    """Opaque cursor over the primary key: no skipped or repeated items while new rows arrive.

    A cursor that does not decode to a position in the id order, or a `page_size` that is not a
    positive integer, is a 400 naming the parameter. A `page_size` over 200 is capped at 200.
    """

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) == 0:
            raise ValidationError({self.page_size_query_param: [f"Must be a positive integer (at most {self.max_page_size} are returned)."]})
        return min(int(raw), self.max_page_size)

    def decode_cursor(self, request) -> Cursor | None:
        invalid = ValidationError({self.cursor_query_param: ["Invalid cursor: use the next or previous link of a page."]})
        try:
            cursor = super().decode_cursor(request)
        except Exception:  # noqa: BLE001 - DRF answers 404 for a cursor that does not decode; we answer 400
            raise invalid from None
        if cursor is not None and cursor.position is not None:
            if not _POSITION.fullmatch(cursor.position) or abs(int(cursor.position)) > INT64_MAX:
                raise invalid
        return cursor
