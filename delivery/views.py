from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import NewestFirstCursorPagination, StorableJSONParser
from delivery import caps, selectors, services
from delivery.models import FrequencyCap
from delivery.serializers import FrequencyCapInput, FrequencyCapOutput, NotificationTraceOutput


class NotHeld(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class NotificationTraceView(APIView):
    """What became of one notification: its status (accepted, scheduled, delivered, skipped, dead-lettered),
    each external channel's attempts and outcome, its dead letters and its inbox row. A campaign
    recipient's notification is `<campaign id>:<recipient id>`.

    DELETE cancels a notification held until its send_at (or delay), until it is released: 204, and
    its trace says `cancelled` (again 204 once cancelled); 409 once released (or never held); 404 unknown."""

    # Hand-written: the trace is read from several tables (delivery.selectors), and DELETE cancels
    # through its service, which no generic view does. One route for both (Django takes the first
    # pattern that matches a path, whatever the method).

    @extend_schema(responses={200: NotificationTraceOutput})
    def get(self, request, notification_id):
        trace = selectors.notification_trace(notification_id=notification_id)
        if trace is None:
            raise NotFound(f"No notification {notification_id}.")
        return Response(NotificationTraceOutput(trace).data)

    @extend_schema(request=None, responses={
        204: OpenApiResponse(description="Cancelled (or cancelled already): it will never be delivered."),
        409: OpenApiResponse(description="Not held any more: released (queued, delivered or settled), or never held."),
    })
    def delete(self, request, notification_id):
        if services.notification_cancel(notification_id=notification_id):
            return Response(status=status.HTTP_204_NO_CONTENT)
        trace = selectors.notification_trace(notification_id=notification_id)
        if trace is None:
            raise NotFound(f"No notification {notification_id}.")
        raise NotHeld(f"Notification {notification_id} is not held (its status is {trace.status}): only a notification "
                      "held until its send_at or delay can be cancelled, until it is released.")


class FrequencyCapViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Frequency caps: at most `max` deliveries on `channel` (of `kind`, or of every kind when null) per
    recipient in any `per_seconds` window, across every campaign and user-to-user notification. A
    delivery over a cap is not made on that channel; when every channel of a notification is capped
    it is skipped with reason `capped`. A change applies to the worker within a few seconds."""

    # list and retrieve are the mixins'; create and destroy call the services (delivery/caps.py).

    serializer_class = FrequencyCapOutput
    pagination_class = NewestFirstCursorPagination
    parser_classes = [StorableJSONParser]  # JSON only: numbers are JSON integers, never strings

    def get_queryset(self):
        return FrequencyCap.objects.all()

    @extend_schema(request=FrequencyCapInput, responses={201: FrequencyCapOutput})
    def create(self, request):
        serializer = FrequencyCapInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        cap = caps.frequency_cap_create(**serializer.validated_data)
        return Response(FrequencyCapOutput(cap).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        caps.frequency_cap_delete(cap=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
