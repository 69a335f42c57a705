from rest_framework.routers import SimpleRouter

from campaigns.views import CampaignViewSet

router = SimpleRouter()
router.register("campaigns", CampaignViewSet, basename="campaign")
urlpatterns = router.urls
