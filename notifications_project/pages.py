"""The first URLs a newcomer opens: `/` (links to the docs, the admin and the demo inbox), `/api/v1/`
(the API root: every route, built from the URL configuration so it never drifts) and `/api/docs/`,
which tells an anonymous visitor where to log in instead of answering a bare 401."""

from __future__ import annotations

import re

from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

API_PREFIX = "api/v1/"
LOGIN_HINT = ("Log in as staff at {login} (scripts/run-all.sh prints the admin password), or send a service token: "
              "Authorization: Token <token> (scripts/run-all.sh prints one; scripts/manage issue_token <name> makes more).")


def _login_url(request) -> str:
    return f"{reverse('admin:login')}?{urlencode({'next': request.get_full_path()})}"


def api_routes() -> list[str]:
    """Every route under /api/v1/, as `/api/v1/recipients/{recipient_id}/notifications/`, in order."""
    routes: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            text = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            elif isinstance(pattern, URLPattern):
                routes.append(text)

    walk(get_resolver().url_patterns, "")
    shown = []
    for route in routes:
        if not route.startswith(API_PREFIX) or route == API_PREFIX:
            continue
        route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route).replace("^", "").replace("$", "")  # the routers' regexes
        route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)  # <str:recipient_id> -> {recipient_id}
        if f"/{route}" not in shown:
            shown.append(f"/{route}")
    return shown


@extend_schema(exclude=True)
class ApiRootView(APIView):
    """The API root: each route of /api/v1/, where the docs and schema are, and how to authenticate.
    Open to anyone: it lists what the README lists, and every route it names checks its caller."""

    permission_classes = [AllowAny]
    authentication_classes = []  # answers the same to everyone: a stale token or session is no reason to refuse
    throttle_classes = []

    def get(self, request):
        return Response({
            "routes": api_routes(),
            "docs": request.build_absolute_uri(reverse("docs")),
            "schema": request.build_absolute_uri(reverse("schema")),
            "authentication": {
                "service": "Authorization: Token <token>",
                "recipient": "Authorization: Bearer <recipient token> (POST /api/v1/recipients/{id}/tokens/)",
                "staff": request.build_absolute_uri(reverse("admin:login")),
            },
        })


class _SaysWhereToLogIn:
    """A visitor without a login is sent to the admin's login (a browser) or told where it is (401)."""

    def handle_exception(self, exc):
        if isinstance(exc, (NotAuthenticated, AuthenticationFailed, PermissionDenied)) and not (
                self.request.user and self.request.user.is_authenticated):
            if "text/html" in self.request.headers.get("Accept", ""):
                return HttpResponseRedirect(_login_url(self.request))
            hint = LOGIN_HINT.format(login=self.request.build_absolute_uri(_login_url(self.request)))
            return JsonResponse({"detail": hint}, status=401, headers={"WWW-Authenticate": "Token"})
        return super().handle_exception(exc)


class DocsView(_SaysWhereToLogIn, SpectacularSwaggerView):
    pass


class SchemaView(_SaysWhereToLogIn, SpectacularAPIView):
    pass


@require_GET
def landing(request):
    """`/`: where to go from here."""
    return render(request, "notifications_project/landing.html", {"user": request.user})
