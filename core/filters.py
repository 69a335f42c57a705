"""django-filter pieces shared by the apps' FilterSets: a list-only backend, and filters that answer a
400 naming the parameter for a value they cannot read, where django-filter's own would read it as
"no filter" (its BooleanWidget turns `unread=perhaps` into None) and list everything silently.

The rules every list endpoint follows:
- a boolean takes what DRF's BooleanField takes (true/false, 1/0, yes/no, on/off...);
- a choice must be one of its choices, given empty too: the 400 lists the valid ones;
- free text (email, locale) filters when given and not empty.
"""

from django import forms
from django_filters import filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.fields import BooleanField as DRFBooleanField

BOOLEAN_INVALID = "Must be a valid boolean."


class ListFilterBackend(DjangoFilterBackend):
    """Applies a view's `filterset_class` to its `list` action only.

    DRF also filters the queryset that `get_object` reads, so on a detail route (retrieve, update,
    destroy, cancel) a query parameter could turn an existing object into a 404, or a bad value into
    a 400; those routes name their object by its id, and their query parameters are not filters.
    """

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", None) != "list":
            return queryset
        return super().filter_queryset(request, queryset, view)


class _BooleanField(forms.Field):
    """A query parameter read as DRF's BooleanField reads it. Absent, it is `default`; empty (or
    "null") it is None where `allow_null`, and invalid otherwise, as is any other word."""

    default_error_messages = {"invalid": BOOLEAN_INVALID}

    def __init__(self, *, allow_null: bool = False, default: bool | None = None, **kwargs):
        self.allow_null = allow_null
        self.default = default
        kwargs["required"] = False
        super().__init__(**kwargs)

    def to_python(self, value):
        if value is None:  # absent: the widget found no such parameter
            return self.default
        value = value.lower() if isinstance(value, str) else value
        if value in DRFBooleanField.TRUE_VALUES:
            return True
        if value in DRFBooleanField.FALSE_VALUES:
            return False
        if self.allow_null and value in DRFBooleanField.NULL_VALUES:
            return None
        raise forms.ValidationError(self.error_messages["invalid"], code="invalid")


class BooleanFilter(filters.BooleanFilter):
    """`BooleanFilter(allow_null=True)`: absent or empty means no filter. `BooleanFilter(default=False)`:
    absent means false (the filter always applies), empty is invalid."""

    field_class = _BooleanField


class _ChoiceField(forms.ChoiceField):
    """Absent means no filter; any value given, empty too, must be one of the choices."""

    def __init__(self, *, choices, **kwargs):
        valid = ", ".join(str(value) for value, _ in choices)
        kwargs["required"] = False
        kwargs.setdefault("error_messages", {}).setdefault(
            "invalid_choice", f'"%(value)s" is not a valid choice; valid choices: {valid}.')
        super().__init__(choices=choices, **kwargs)

    def clean(self, value):
        if value == "":  # given empty: not a choice (Django would read it as absent)
            raise forms.ValidationError(self.error_messages["invalid_choice"], code="invalid_choice", params={"value": ""})
        return super().clean(value)


class ChoiceFilter(filters.ChoiceFilter):
    """A choice whose 400 lists the valid choices (as the bodies' kind fields do)."""

    field_class = _ChoiceField
