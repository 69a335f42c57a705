"""The OpenAPI schema (drf-spectacular): every answer an operation can give, and the recipient tokens.

Each operation documents, besides its own answers, the errors every route shares: 400 (a message per
field: body, query parameters, path ids), 401, 403, 406, 429, 404 where the path names something,
415 where it takes a body, and 422 where it takes an Idempotency-Key.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse

from inbox.permissions import InboxAccess


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=OpenApiTypes.OBJECT, description=description)


SHARED_ERRORS = {
    "400": _error('Invalid input: {"<field>": ["message", ...]} naming each bad field, '
                  'query parameter or path id, or {"detail": "message"}. Nothing was stored.'),
    "401": _error('No or invalid credentials: {"detail": "message"}.'),
    "403": _error('These credentials may not do this: {"detail": "message"}.'),
    "406": _error('The Accept header asks for neither JSON nor the browsable API\'s HTML: {"detail": "message"}.'),
    "429": _error('Too many requests from this token: {"detail": "message"}; see the Retry-After header.'),
}
NOT_FOUND = _error('No such thing, or another recipient\'s: {"detail": "message"}.')
UNSUPPORTED_MEDIA_TYPE = _error('The body\'s Content-Type is not JSON, form or multipart: {"detail": "message"}.')
IDEMPOTENCY_CONFLICT = _error('This Idempotency-Key was used with another request body: {"detail": "message"}.')


class ApiAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        errors = dict(SHARED_ERRORS)
        if "{" in self.path:
            errors["404"] = NOT_FOUND
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors["415"] = UNSUPPORTED_MEDIA_TYPE
        if getattr(self._view_method(), "idempotent", False):
            errors["422"] = IDEMPOTENCY_CONFLICT
        for code, error in errors.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(error, code, direction=direction)
        return dict(sorted(responses.items()))

    def _view_method(self):
        name = getattr(self.view, "action", None) or self.method.lower()
        return getattr(self.view, name, None)


class RecipientTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer <recipient token>`: one recipient's own inbox, read state and preferences."""

    target_class = "inbox.authentication.RecipientTokenAuthentication"
    name = "recipientToken"

    def get_security_requirement(self, auto_schema):
        if not any(issubclass(p, InboxAccess) for p in auto_schema.view.permission_classes):
            return None  # everywhere else a recipient token is refused (403)
        return {self.name: []}

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A recipient token from POST /api/v1/recipients/{id}/tokens/: reads, marks and "
                           "streams only that recipient's own inbox and preferences.",
        }
