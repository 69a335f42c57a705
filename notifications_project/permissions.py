from rest_framework.authtoken.models import Token
from rest_framework.permissions import BasePermission


class IsServiceClientOrStaff(BasePermission):
    """Service clients (DRF token) and staff (session login, for the browsable API) may do everything."""

    message = "A service token (Authorization: Token <token>) or a staff login is required."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return isinstance(request.auth, Token) or user.is_staff
