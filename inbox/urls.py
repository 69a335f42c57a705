from django.urls import path
from rest_framework.routers import SimpleRouter

from inbox import views

router = SimpleRouter()
router.register("recipients", views.RecipientViewSet, basename="recipient")

urlpatterns = [
    path("notifications/", views.NotificationSendView.as_view(), name="notification-send"),
    path(
        "recipients/<str:recipient_id>/notifications/",
        views.RecipientNotificationListView.as_view(),
        name="recipient-notification-list",
    ),
    *router.urls,
]
