from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from inbox import selectors, services
from inbox.models import NotificationKind
from inbox.serializers import NotificationAcceptedOutput, NotificationOutput, NotificationSendInput, SeedSendInput
from notifications_project.api import NewestFirstCursorPagination


def _accepted(task) -> Response:
    return Response(NotificationAcceptedOutput({"id": task.notification_id}).data, status=status.HTTP_202_ACCEPTED)


class NotificationSendView(APIView):
    """Send one user-to-user notification (follow, mention, like, custom)."""

    @extend_schema(request=NotificationSendInput, responses={202: NotificationAcceptedOutput})
    def post(self, request):
        serializer = NotificationSendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _accepted(services.notification_send(**serializer.validated_data))


class SeedSendView(APIView):
    """The first seed's POST /send (fromID, toID, message); the kind is `custom`."""

    @extend_schema(request=SeedSendInput, responses={202: NotificationAcceptedOutput})
    def post(self, request):
        serializer = SeedSendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = services.notification_send(
            sender=data["fromID"], recipient=data["toID"], kind=NotificationKind.CUSTOM, message=data["message"], data={}
        )
        return _accepted(task)


class RecipientNotificationListView(ListAPIView):
    """A recipient's inbox, newest first (cursor-paginated, `page_size` up to 200)."""

    serializer_class = NotificationOutput
    pagination_class = NewestFirstCursorPagination

    def get_queryset(self):
        return selectors.notification_list(recipient_external_id=self.kwargs["recipient_id"])
