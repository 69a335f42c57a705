from django.urls import path
from rest_framework.routers import SimpleRouter

from delivery import views

router = SimpleRouter()
router.register("frequency-caps", views.FrequencyCapViewSet, basename="frequency-cap")

urlpatterns = [
    # Beside POST notifications/ (campaigns.urls), which has no id in its path. GET traces, DELETE cancels a held one.
    path("notifications/<str:notification_id>/", views.NotificationTraceView.as_view(), name="notification-trace"),
    *router.urls,
]
