from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission

from inbox.authentication import RecipientPrincipal


def is_service_or_staff(request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated) and (isinstance(request.auth, Token) or user.is_staff)


class IsServiceClientOrStaff(BasePermission):
    """Service clients (DRF token) and staff (session login, for the browsable API) may do everything;
    a recipient token is refused (403) everywhere outside its own inbox."""

    message = "A service token (Authorization: Token <token>) or a staff login is required."

    def has_permission(self, request, view) -> bool:
        return is_service_or_staff(request)


class InboxAccess(BasePermission):
    """A recipient's inbox and preferences: services and staff, or that recipient's own token.
    Another recipient's inbox answers 404, never hinting that it exists."""

    message = IsServiceClientOrStaff.message

    def has_permission(self, request, view) -> bool:
        if is_service_or_staff(request):
            return True
        if isinstance(request.user, RecipientPrincipal):
            if request.user.recipient_id != view.kwargs.get("recipient_id"):
                raise NotFound()
            return True
        return False
