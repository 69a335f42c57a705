"""The query parameters of the inbox's and the directory's lists, as FilterSets.

Each narrows the queryset its view's selector gives (`selectors.notification_list`: one recipient's
notifications, found by its primary key as a constant, the fast path of the inbox) and never joins.
A value a filter cannot read is a 400 naming the parameter (`core.filters`).
"""

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

from core.filters import BooleanFilter, ChoiceFilter, _ChoiceField
from core.messages import Channel, Kind
from inbox import kinds as kind_registry
from inbox.models import Notification, Recipient, Template


class _KindChoiceField(_ChoiceField):
    """A kind: built in or registered (any given, empty too, must be one)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.error_messages["invalid_choice"] = (
            f'"%(value)s" is not a valid choice; valid choices: {kind_registry.kind_choices_text()}.')

    def valid_value(self, value):
        return kind_registry.kind_exists(str(value))


class KindFilter(ChoiceFilter):
    field_class = _KindChoiceField

    def __init__(self, **kwargs):
        super().__init__(choices=Kind.choices, **kwargs)

ATTRIBUTE_PREFIX = "attributes."


class InboxFilter(filters.FilterSet):
    # Declared in the order the WHERE clause had when the selector applied them (archived, unread, kind):
    # `archived=false` with `unread=true` is what the partial index on unread rows covers.
    archived = extend_schema_field({
        "type": "boolean", "default": False,
        "description": "true: only the archived notifications (otherwise they are not listed).",
    })(BooleanFilter(method="filter_archived", default=False))
    unread = BooleanFilter(method="filter_unread", allow_null=True,
                           help_text="true: only unread notifications; false: only read ones.")
    kind = KindFilter()

    class Meta:
        model = Notification
        fields = ["archived", "unread", "kind"]

    def filter_archived(self, notifications, name, value: bool):
        return notifications.archived() if value else notifications.unarchived()

    def filter_unread(self, notifications, name, value: bool):
        return notifications.filter(read_at__isnull=value)


class RecipientFilter(filters.FilterSet):
    """`email` (case-insensitive), `locale`, and `attributes.<name>=<value>` (string values)."""

    email = filters.CharFilter(lookup_expr="iexact", help_text="Case-insensitive.")
    locale = filters.CharFilter()

    class Meta:
        model = Recipient
        fields = ["email", "locale"]

    def filter_queryset(self, recipients):
        # Hand-written: one parameter per attribute name (`attributes.country=DE`), which a FilterSet
        # cannot declare, as its filters have fixed names. The name goes through `with_attribute`
        # (a KeyTransform), never into a lookup string, so no parameter can become a lookup.
        recipients = super().filter_queryset(recipients)
        for key, value in self.data.items():
            if key.startswith(ATTRIBUTE_PREFIX):
                recipients = recipients.with_attribute(key.removeprefix(ATTRIBUTE_PREFIX), value)
        return recipients


class TemplateFilter(filters.FilterSet):
    kind = KindFilter()
    channel = ChoiceFilter(choices=Channel.choices)
    locale = filters.CharFilter(help_text="Exactly (empty: no filter).")

    class Meta:
        model = Template
        fields = ["kind", "channel", "locale"]
