from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import APIException, AuthenticationFailed, NotAuthenticated, NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import NewestFirstCursorPagination
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from core.messages import Kind
from inbox import selectors, services
from inbox.authentication import (
    RecipientPrincipal,
    recipient_token_issue,
    service_token_check,
    service_token_refused,
    service_token_unchecked,
)
from inbox.filters import InboxFilter, RecipientFilter
from inbox.models import Notification, Recipient
from inbox.permissions import InboxAccess
from inbox.serializers import (
    RECIPIENTS_PER_REQUEST_MAX,
    NotificationAcceptedOutput,
    NotificationOutput,
    NotificationSendInput,
    PreferenceInput,
    PushSecretOutput,
    ReadAllInput,
    ReadAllOutput,
    RecipientInput,
    RecipientOutput,
    RecipientTokenOutput,
    RecipientUpdateInput,
    RecipientUpdateOutput,
    RecipientUpsertOutput,
    SeedSendInput,
    UnreadCountInput,
    UnreadCountOutput,
)


def _accepted(task) -> Response:
    # NotificationAcceptedOutput's shape (it documents it), without a serializer per request.
    return Response({"id": task.notification_id, "status": "accepted"}, status=status.HTTP_202_ACCEPTED)


# Lists, retrieve and destroy are DRF's generic mixins with FilterSets (inbox/filters.py). The views
# written by hand below are the ones no generic view fits, each saying why.


def _send(request, **fields) -> Response:
    """Queue one notification; a service token from memory is checked by the outbox INSERT itself."""
    try:
        task = services.notification_send(**fields, only_if=service_token_unchecked(request))
    except services.NotAccepted:
        service_token_refused(request)  # deleted, rotated or its user deactivated since: 401
    return _accepted(task)


class TokenCheckedInStatement:
    """A send view: its accepted answer is one INSERT, which checks the caller's service token in the
    same statement (inbox.authentication). Every other answer checks the token first: an error (400,
    429, ...) and an Idempotency-Key request (a replay writes nothing)."""

    token_checked_in_statement = True

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.headers.get("Idempotency-Key") is not None:
            service_token_check(request)

    def handle_exception(self, exc):
        if isinstance(exc, (APIException, Http404, PermissionDenied)) and not isinstance(
                exc, (AuthenticationFailed, NotAuthenticated)):
            try:
                service_token_check(self.request)
            except AuthenticationFailed as refused:
                exc = refused
        return super().handle_exception(exc)


class NotificationSendView(TokenCheckedInStatement, APIView):
    """Send one user-to-user notification (its `kind` one of the user-to-user kinds)."""

    # Hand-written: it creates no row here (the service queues a task) and answers 202 with the id.

    @extend_schema(request=NotificationSendInput, responses={202: NotificationAcceptedOutput},
                   parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @idempotent
    def post(self, request):
        serializer = NotificationSendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _send(request, **serializer.validated_data)


class SeedSendView(TokenCheckedInStatement, APIView):
    """The first seed's POST /send (fromID, toID, message); the kind is `custom`."""

    # Hand-written, as NotificationSendView.

    @extend_schema(request=SeedSendInput, responses={202: NotificationAcceptedOutput}, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @idempotent
    def post(self, request):
        serializer = SeedSendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return _send(request, sender=data["fromID"], recipient=data["toID"], kind=Kind.CUSTOM,
                     message=data["message"], data={})


class InboxViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """A recipient's inbox: services, staff, or that recipient's own token (Authorization: Bearer ...).

    The list is newest first with an opaque cursor, `page_size` up to 200, and filters `unread`
    (true/false), `kind`, and `archived` (archived notifications are listed only with archived=true).
    """

    # The list is ListModelMixin's, its query parameters InboxFilter's. The read-state actions below are
    # hand-written: each calls its service and answers a shape of its own (the notification,
    # {"marked": n}, {"count": n}), which no generic view or mixin does.

    serializer_class = NotificationOutput
    pagination_class = NewestFirstCursorPagination
    permission_classes = [InboxAccess]
    filterset_class = InboxFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model, with no path
            return Notification.objects.none()
        return selectors.notification_list(recipient_external_id=self.kwargs["recipient_id"])

    @extend_schema(request=None, responses={200: NotificationOutput})
    def mark(self, request, recipient_id, notification_id, action):
        try:
            notification = services.notification_mark(
                recipient_external_id=recipient_id, notification_id=notification_id, action=action
            )
        except Notification.DoesNotExist:
            raise NotFound(f"Recipient {recipient_id} has no notification {notification_id}.") from None
        return Response(NotificationOutput(notification).data)

    @extend_schema(request=ReadAllInput, responses={200: ReadAllOutput})
    def read_all(self, request, recipient_id):
        serializer = ReadAllInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            marked = services.notifications_mark_all_read(recipient_external_id=recipient_id, **serializer.validated_data)
        except Notification.DoesNotExist:
            raise ValidationError({"up_to": ["No such notification in this inbox."]}) from None
        return Response(ReadAllOutput({"marked": marked}).data)

    @extend_schema(parameters=[UnreadCountInput], responses={200: UnreadCountOutput})
    def unread_count(self, request, recipient_id):
        query = UnreadCountInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data.get("limit")
        count = selectors.notification_unread_count(recipient_external_id=recipient_id, limit=limit)
        capped = limit is not None and count > limit
        return Response(UnreadCountOutput({"count": min(count, limit) if capped else count, "capped": capped}).data)


class PreferenceView(APIView):
    """A recipient's opt-outs, honoured by the worker (an opted-out delivery is skipped)."""

    # Hand-written: GET answers the defaults for a recipient with no row (or none at all), and PUT may
    # create the recipient; RetrieveUpdateAPIView would answer 404 for both.

    permission_classes = [InboxAccess]

    @extend_schema(responses={200: PreferenceInput})
    def get(self, request, recipient_id):
        return Response(selectors.preference_get(recipient_external_id=recipient_id))

    @extend_schema(request=PreferenceInput, responses={200: PreferenceInput})
    def put(self, request, recipient_id):
        serializer = PreferenceInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            preference = services.preference_set(recipient_external_id=recipient_id, **serializer.validated_data,
                                                 create_recipient=not isinstance(request.user, RecipientPrincipal))
        except Recipient.DoesNotExist:
            raise NotFound(f"No recipient {recipient_id}.") from None
        return Response({"kinds": preference.kinds, "channels": preference.channels})


class RecipientTokenView(APIView):
    """Issue a signed, expiring token with which the recipient's own client reads its inbox (POST;
    creates the recipient if unknown), or revoke all of the recipient's tokens (DELETE; its streams
    opened with one close)."""

    # Hand-written: a token is signed, not stored, and revoking is an update; no model to retrieve or destroy.

    @extend_schema(request=None, responses={201: RecipientTokenOutput})
    def post(self, request, recipient_id):
        token, expires_at = recipient_token_issue(recipient_id=recipient_id)
        return Response(RecipientTokenOutput({"token": token, "expires_at": expires_at}).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, recipient_id):
        try:
            services.recipient_tokens_revoke(recipient_external_id=recipient_id)
        except Recipient.DoesNotExist:
            raise NotFound(f"No recipient {recipient_id}.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                       viewsets.GenericViewSet):
    """The recipient directory, keyed by the product's user id.

    List filters: `email`, `locale`, and `attributes.<name>=<value>` (string values).
    """

    # list, retrieve and destroy are the mixins' (destroy through the service). create (an upsert of
    # one recipient or a list, answering counts) and partial_update (answering the new push secret) are
    # hand-written: their input and output serializers differ and the writes are services', where
    # CreateModelMixin and UpdateModelMixin would save the input serializer and answer with it.

    serializer_class = RecipientOutput
    pagination_class = NewestFirstCursorPagination
    filterset_class = RecipientFilter
    lookup_field = "external_id"
    lookup_url_kwarg = "recipient_id"
    lookup_value_regex = r"[^/]+"
    max_body_bytes = settings.RECIPIENT_UPSERT_MAX_BYTES

    def get_queryset(self):
        return selectors.recipient_list()

    @extend_schema(
        request=RecipientInput(many=True),
        responses={200: RecipientUpsertOutput},
        description=f"Upsert one recipient (an object) or up to {RECIPIENTS_PER_REQUEST_MAX} (a list).",
    )
    def create(self, request):
        many = isinstance(request.data, list)
        if many and len(request.data) > RECIPIENTS_PER_REQUEST_MAX:
            raise ValidationError({"non_field_errors": [f"At most {RECIPIENTS_PER_REQUEST_MAX} recipients per request."]})
        serializer = RecipientInput(data=request.data, many=many)
        serializer.is_valid(raise_exception=True)
        entries = serializer.validated_data if many else [serializer.validated_data]
        result = services.recipients_upsert(recipients=entries)
        answer = {"created": result.created, "updated": result.updated}
        if result.push_secrets:
            answer["push_secrets"] = result.push_secrets
        return Response(RecipientUpsertOutput(answer).data)

    @extend_schema(request=RecipientUpdateInput, responses={200: RecipientUpdateOutput})
    def partial_update(self, request, recipient_id=None):
        serializer = RecipientUpdateInput(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        recipient, secret = services.recipient_update(recipient=self.get_object(), **serializer.validated_data)
        return Response(RecipientUpdateOutput(recipient, context={"new_push_secret": secret}).data)

    def perform_destroy(self, instance):
        services.recipient_delete(recipient=instance)  # erases its inbox and ends its tokens and streams


class NoPushEndpoint(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This recipient has no push endpoint: set one first (its answer carries the secret)."
    default_code = "no_push_endpoint"


class PushSecretRotateView(APIView):
    """A new signing secret for the recipient's push endpoint; the previous one keeps signing beside it
    for WEBHOOK_SECRET_GRACE_SECONDS (both signatures are sent), so the receiver can switch at leisure."""

    # Hand-written: an action on a recipient that answers the new secret, not the recipient.

    @extend_schema(request=None, responses={
        200: PushSecretOutput,
        404: OpenApiResponse(description="No such recipient."),
        409: OpenApiResponse(description="The recipient has no push endpoint."),
    })
    def post(self, request, recipient_id):
        try:
            rotated = services.push_secret_rotate(recipient_external_id=recipient_id)
        except Recipient.DoesNotExist:
            raise NotFound(f"No recipient {recipient_id}.") from None
        except services.NoPushEndpoint:
            raise NoPushEndpoint() from None
        return Response(PushSecretOutput(rotated).data)
