from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery import selectors
from delivery.serializers import NotificationTraceOutput


class NotificationTraceView(APIView):
    """What became of one notification: its status (accepted, scheduled, delivered, skipped, dead-lettered),
    each external channel's attempts and outcome, its dead letters and its inbox row. A campaign
    recipient's notification is `<campaign id>:<recipient id>`."""

    @extend_schema(responses={200: NotificationTraceOutput})
    def get(self, request, notification_id):
        trace = selectors.notification_trace(notification_id=notification_id)
        if trace is None:
            raise NotFound(f"No notification {notification_id}.")
        return Response(NotificationTraceOutput(trace).data)
