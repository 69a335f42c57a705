from django.urls import path
from rest_framework.routers import SimpleRouter

from inbox import views
from inbox.stream_views import notification_stream

router = SimpleRouter()
router.register("recipients", views.RecipientViewSet, basename="recipient")
router.register("kinds", views.KindViewSet, basename="kind")
router.register("templates", views.TemplateViewSet, basename="template")

inbox_list = views.InboxViewSet.as_view({"get": "list"})
inbox_read_all = views.InboxViewSet.as_view({"post": "read_all"})
inbox_unread_count = views.InboxViewSet.as_view({"get": "unread_count"})
inbox_mark = views.InboxViewSet.as_view({"post": "mark"})

INBOX = "recipients/<str:recipient_id>/notifications/"

urlpatterns = [
    # POST notifications/ is campaigns.views.NotificationOrTopicSendView (a topic makes a campaign).
    path(INBOX, inbox_list, name="inbox-list"),
    path(f"{INBOX}read-all/", inbox_read_all, name="inbox-read-all"),
    path(f"{INBOX}unread-count/", inbox_unread_count, name="inbox-unread-count"),
    path(f"{INBOX}stream/", notification_stream, name="inbox-stream"),
    *(
        path(f"{INBOX}<str:notification_id>/{action}/", inbox_mark, {"action": action}, name=f"inbox-{action}")
        for action in ("read", "unread", "seen", "archive", "unarchive")
    ),
    path("topics/<str:key>/subscribers/", views.TopicSubscribersView.as_view(), name="topic-subscribers"),
    path("recipients/<str:recipient_id>/topics/", views.RecipientTopicsView.as_view(), name="recipient-topics"),
    path("recipients/<str:recipient_id>/preferences/", views.PreferenceView.as_view(), name="recipient-preferences"),
    path("recipients/<str:recipient_id>/tokens/", views.RecipientTokenView.as_view(), name="recipient-tokens"),
    path("recipients/<str:recipient_id>/push-secret/rotate/", views.PushSecretRotateView.as_view(),
         name="recipient-push-secret-rotate"),
    *router.urls,
]
