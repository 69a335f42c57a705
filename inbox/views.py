import re

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import (
    APIException,
    AuthenticationFailed,
    NotAuthenticated,
    NotFound,
    ValidationError,
)
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import NewestFirstCursorPagination, StorableJSONParser
from core.db import Condition
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from inbox import selectors, services, subscriptions, templating
from inbox.authentication import (
    RecipientPrincipal,
    recipient_token_issue,
    service_token_check,
    service_token_refused,
    service_token_unchecked,
)
from inbox.filters import InboxFilter, RecipientFilter, TemplateFilter
from inbox.models import (
    SUBSCRIPTION_KEY_REGEX,
    Notification,
    Recipient,
    Subscription,
    Template,
)
from inbox.permissions import InboxAccess
from inbox.serializers import (
    RECIPIENTS_PER_REQUEST_MAX,
    KindInput,
    KindOutput,
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
    RecipientTopicOutput,
    RecipientUpdateInput,
    RecipientUpdateOutput,
    RecipientUpsertOutput,
    SeedSendInput,
    SubscriberOutput,
    SubscriberPageOutput,
    SubscribersAddedOutput,
    SubscribersInput,
    SubscribersRemovedOutput,
    TemplateInput,
    TemplateOutput,
    TemplatePreviewInput,
    TemplatePreviewOutput,
    UnreadCountInput,
    UnreadCountOutput,
)


def _accepted(accepted: services.Accepted) -> Response:
    # NotificationAcceptedOutput's shape (it documents it), without a serializer per request.
    return Response({"id": accepted.notification_id, "status": "scheduled" if accepted.scheduled else "accepted"},
                    status=status.HTTP_202_ACCEPTED)


# Lists, retrieve and destroy are DRF's generic mixins with FilterSets (inbox/filters.py). The views
# written by hand below are the ones no generic view fits, each saying why.


def _send(request, *, message: str = "", **fields) -> Response:
    """Queue one notification; a service token from memory is checked by the outbox INSERT itself, and
    so is, for a notification without a message, its kind's default in-app template."""
    token = service_token_unchecked(request)
    # A digest says its events in the kind's template or in a built-in sentence: no template needed,
    # unless the kind is urgent (never folded: delivered on its own, it needs its text).
    folded = fields.get("digest") is not None and fields["kind"] not in selectors.kind_rules(names={fields["kind"]})[1]
    template = None if message or folded else selectors.template_default_condition(kind=fields["kind"])
    try:
        accepted = services.notification_send(**fields, message=message, only_if=Condition.all(token, template))
    except services.NotAccepted:
        if template is None or (token is not None and not token.holds()):
            service_token_refused(request)  # deleted, rotated or its user deactivated since: 401
        raise ValidationError({"message": [
            f"Required: kind {fields['kind']} has no default in_app template to render it from "
            "(POST /api/v1/templates/ with an empty locale)."]}) from None
    return _accepted(accepted)


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
        return self.send(request)

    def send(self, request) -> Response:
        serializer = NotificationSendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _send(request, **serializer.validated_data)


class SeedSendView(TokenCheckedInStatement, APIView):
    """The first seed's POST /send (fromID, toID, message, and an optional kind: `custom` by default)."""

    # Hand-written, as NotificationSendView.

    @extend_schema(request=SeedSendInput, responses={202: NotificationAcceptedOutput}, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @idempotent
    def post(self, request):
        serializer = SeedSendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return _send(request, sender=data["fromID"], recipient=data["toID"], kind=data["kind"],
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
        return Response({"kinds": preference.kinds, "channels": preference.channels,
                         "quiet_hours": preference.quiet_hours})


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


_SUBSCRIPTION_KEY = re.compile(SUBSCRIPTION_KEY_REGEX)


def _subscription_key(key: str) -> str:
    if not _SUBSCRIPTION_KEY.match(key):
        raise ValidationError({"key": ["A topic key is 1 to 200 letters, digits and '_', '.', ':', '@' or '-'."]})
    return key


class TopicSubscribersView(APIView):
    """A topic's subscribers: GET lists them (cursor pages, newest first), PUT adds the body's
    `recipients`, DELETE removes them. A notification or a campaign sent to the topic reaches them all."""

    # Hand-written: one resource with three verbs whose inputs and outputs differ (no generic view has
    # a bulk PUT and a DELETE with a body); the list uses the generic cursor pagination.

    max_body_bytes = settings.RECIPIENT_UPSERT_MAX_BYTES
    # JSON only: a list of 10,000 ids as form fields would be refused by Django's field limit with an HTML page.
    parser_classes = [StorableJSONParser]

    @extend_schema(responses={200: SubscriberPageOutput}, parameters=[
        OpenApiParameter("cursor", str, description="The `next` or `previous` link's cursor."),
        OpenApiParameter("page_size", int, description="At most 200 (default 50)."),
    ])
    def get(self, request, key):
        paginator = NewestFirstCursorPagination()
        page = paginator.paginate_queryset(subscriptions.subscribers_of(key=_subscription_key(key)), request, view=self)
        return paginator.get_paginated_response(SubscriberOutput(page, many=True).data)

    @extend_schema(request=SubscribersInput, responses={200: SubscribersAddedOutput})
    def put(self, request, key):
        added = subscriptions.subscribers_add(key=_subscription_key(key), recipients=self._recipients(request))
        return Response({"added": added})

    @extend_schema(request=SubscribersInput, responses={200: SubscribersRemovedOutput})
    def delete(self, request, key):
        removed = subscriptions.subscribers_remove(key=_subscription_key(key), recipients=self._recipients(request))
        return Response({"removed": removed})

    @staticmethod
    def _recipients(request) -> list[str]:
        serializer = SubscribersInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data["recipients"]


class RecipientTopicsView(generics.ListAPIView):
    """The topics a recipient is subscribed to (cursor pages, newest first); an unknown recipient has none."""

    serializer_class = RecipientTopicOutput
    pagination_class = NewestFirstCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema's look at the view
            return Subscription.objects.none()
        return subscriptions.subscriptions_of(recipient_external_id=self.kwargs["recipient_id"])


class KindViewSet(viewsets.ViewSet):
    """Kinds: the built-in ones and the ones services register, each with its templates. A registered
    kind is accepted wherever a kind is (sends, preferences, templates, the inbox's filter). Kinds are
    never deleted: their names are in stored notifications and preferences."""

    # Hand-written: the list joins the built-in kinds (code) with the registered ones (rows), and a
    # kind's name is its id; no model or queryset holds them all.

    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    @extend_schema(responses={200: KindOutput(many=True)})
    def list(self, request):
        return Response(KindOutput(selectors.kind_list(), many=True).data)

    @extend_schema(responses={200: KindOutput})
    def retrieve(self, request, name=None):
        kind = selectors.kind_get(name=name)
        if kind is None:
            raise NotFound(f"No kind {name}.")
        return Response(KindOutput(kind).data)

    @extend_schema(request=KindInput, responses={201: KindOutput})
    def create(self, request):
        serializer = KindInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            kind = services.kind_register(**serializer.validated_data)
        except IntegrityError:  # registered concurrently
            raise ValidationError({"name": [f'"{serializer.validated_data["name"]}" is registered already.']}) from None
        return Response(KindOutput(selectors.kind_get(name=kind.name)).data, status=status.HTTP_201_CREATED)


class TemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Templates: what a kind's notifications say on a channel in a locale, in Liquid. A send without
    a message is rendered from them in the recipient's locale (de-AT, then de, then the default).
    Filter the list by `kind`, `channel` and `locale`."""

    # list and retrieve are the mixins'. create, update and destroy are hand-written around their
    # services (the input serializer parses every part; the output is the stored template).

    serializer_class = TemplateOutput
    pagination_class = NewestFirstCursorPagination
    filterset_class = TemplateFilter

    def get_queryset(self):
        return selectors.template_list()

    def _save(self, request, *, instance: Template | None = None, partial: bool = False) -> Template:
        serializer = TemplateInput(instance, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        try:
            if instance is None:
                return services.template_create(**serializer.validated_data)
            return services.template_update(template=instance, **serializer.validated_data)
        except IntegrityError:  # the same kind, channel and locale saved concurrently
            raise ValidationError({"locale": ["A template of this kind, channel and locale exists already."]}) from None

    @extend_schema(request=TemplateInput, responses={201: TemplateOutput})
    def create(self, request):
        return Response(TemplateOutput(self._save(request)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TemplateInput, responses={200: TemplateOutput})
    def update(self, request, pk=None):
        return Response(TemplateOutput(self._save(request, instance=self.get_object())).data)

    @extend_schema(request=TemplateInput, responses={200: TemplateOutput})
    def partial_update(self, request, pk=None):
        return Response(TemplateOutput(self._save(request, instance=self.get_object(), partial=True)).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        services.template_delete(template=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=TemplatePreviewInput, responses={200: TemplatePreviewOutput})
    @action(detail=False, methods=["post"])
    def preview(self, request):
        serializer = TemplatePreviewInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        d = serializer.validated_data
        try:
            rendered = selectors.template_preview(
                kind=d["kind"], channel=d["channel"], locale=d["locale"], actor=d["actor"],
                recipient_id=d["recipient"].get("id", ""), attributes=d["recipient"].get("attributes", {}),
                data=d["data"], parts={p: d[p] for p in templating.ALL_PARTS if p in d},
            )
        except templating.TemplateError as exc:
            raise ValidationError({exc.part or "non_field_errors": [str(exc)]}) from None
        return Response(TemplatePreviewOutput(rendered).data)
