from django.urls import path

from delivery import views

urlpatterns = [
    # Beside POST notifications/ (inbox.urls), which has no id in its path.
    path("notifications/<str:notification_id>/", views.NotificationTraceView.as_view(), name="notification-trace"),
]
