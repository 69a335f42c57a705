from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from campaigns import views as campaign_views
from core.api import api_not_found
from inbox import views as inbox_views
from inbox.demo_views import demo_inbox
from notifications_project import operations, pages
from notifications_project.bench.bare import BareView

urlpatterns = [
    path("", pages.landing, name="landing"),
    path("healthz", operations.healthz, name="healthz"),
    path("readyz", operations.readyz, name="readyz"),
    path("metrics", operations.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/schema/", pages.SchemaView.as_view(), name="schema"),
    path("api/docs/", pages.DocsView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", pages.ApiRootView.as_view(), name="api-root"),
    path("api/v1/", include("inbox.urls")),
    path("api/v1/", include("campaigns.urls")),
    path("api/v1/", include("delivery.urls")),
    *([path("api/bench/bare/", BareView.as_view())] if settings.BENCH_ENDPOINTS else []),
    re_path(r"^api/", api_not_found),
    # The seeds' routes, so their curl lines work as they are (plus the Authorization header).
    path("send", inbox_views.SeedSendView.as_view(), name="seed-send"),
    path("notifications/<str:recipient_id>", inbox_views.InboxViewSet.as_view({"get": "list"}), name="seed-notifications"),
    path("offers", campaign_views.SeedOfferView.as_view(), name="seed-offers"),
    # The drop-in web inbox (<notification-inbox>, inbox/static/inbox/notification-inbox.js) for staff.
    path("demo/inbox/", demo_inbox, name="demo-inbox"),
]
