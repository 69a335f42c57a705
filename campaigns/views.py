from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns import selectors, services
from campaigns.filters import CampaignFilter
from campaigns.serializers import (
    CampaignCreateInput,
    CampaignOutput,
    NotificationOrTopicAcceptedOutput,
    TopicNotificationInput,
)
from core.api import NewestFirstCursorPagination
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from inbox.serializers import NotificationSendInput
from inbox.views import NotificationSendView


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


# A USER_IDS segment of 10,000 ids of up to 128 characters does not fit the default 64 KiB.
CAMPAIGN_BODY_MAX_BYTES = 2 * 1024 * 1024


def _create(request) -> Response:
    serializer = CampaignCreateInput(data=request.data)
    serializer.is_valid(raise_exception=True)
    campaign = services.campaign_create(**serializer.validated_data)
    return Response(CampaignOutput(campaign).data, status=status.HTTP_201_CREATED)


class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Campaigns: one message to every recipient of a segment. Filter the list by `status` and `kind`."""

    # list and retrieve are the mixins'. create is hand-written: its input and output serializers differ
    # and the campaign is made by its service (which also queues its event), where CreateModelMixin
    # would save the input serializer and answer with it.

    serializer_class = CampaignOutput
    pagination_class = NewestFirstCursorPagination
    filterset_class = CampaignFilter
    max_body_bytes = CAMPAIGN_BODY_MAX_BYTES

    def get_queryset(self):
        return selectors.campaign_list()

    @extend_schema(request=CampaignCreateInput, responses={201: CampaignOutput}, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @idempotent
    def create(self, request):
        return _create(request)

    @extend_schema(request=None, responses={200: CampaignOutput, 409: OpenApiResponse(description="already completed")})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        try:
            campaign = services.campaign_cancel(campaign=self.get_object())
        except services.CampaignConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(CampaignOutput(campaign).data)


class SeedOfferView(APIView):
    """The second seed's POST /offers: {"title": ..., "segment": {...}}; `body` optional, kind `offer`."""

    # Hand-written, as CampaignViewSet.create (a route of its own: the seed's path).

    max_body_bytes = CAMPAIGN_BODY_MAX_BYTES

    @extend_schema(request=CampaignCreateInput, responses={201: CampaignOutput}, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @idempotent
    def post(self, request):
        return _create(request)


class NotificationOrTopicSendView(NotificationSendView):
    """POST /api/v1/notifications/: to one `recipient` (the inbox's view), or with `topic` instead, to
    every subscriber of that topic but the sender (a campaign to the topic, fanned out by the dispatcher)."""

    # The inbox's view handles a recipient; the topic answer is here, a layer above, because it makes
    # a campaign. A `topic` in the body decides (form-encoded bodies cannot name one).

    @extend_schema(
        request=PolymorphicProxySerializer(component_name="NotificationSendOrTopicInput", resource_type_field_name=None,
                                           serializers=[NotificationSendInput, TopicNotificationInput]),
        responses={202: NotificationOrTopicAcceptedOutput},
        parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @idempotent
    def post(self, request):
        if not (isinstance(request.data, dict) and "topic" in request.data):
            return self.send(request)
        serializer = TopicNotificationInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        campaign = services.topic_notification_send(sender=data["sender"], key=data["topic"], kind=data["kind"],
                                                    message=data["message"], data=data["data"])
        return Response({"id": str(campaign.id), "topic": data["topic"], "status": "accepted"},
                        status=status.HTTP_202_ACCEPTED)
