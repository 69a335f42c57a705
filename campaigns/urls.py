from django.urls import path
from rest_framework.routers import SimpleRouter

from campaigns.views import CampaignViewSet, NotificationOrTopicSendView

router = SimpleRouter()
router.register("campaigns", CampaignViewSet, basename="campaign")
urlpatterns = [
    path("notifications/", NotificationOrTopicSendView.as_view(), name="notification-send"),
    *router.urls,
]
