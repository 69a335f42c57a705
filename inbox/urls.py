from django.urls import path

from inbox import views

urlpatterns = [
    path("notifications/", views.NotificationSendView.as_view(), name="notification-send"),
    path(
        "recipients/<str:recipient_id>/notifications/",
        views.RecipientNotificationListView.as_view(),
        name="recipient-notification-list",
    ),
]
