from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from core.admin_mixins import ReadOnlyAdminMixin
from inbox import kinds as kind_registry
from inbox import services, templating
from inbox.models import Notification, NotificationKind, Recipient, Subscription, Template


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["external_id", "email", "locale", "timezone", "created_at"]
    search_fields = ["=external_id", "email"]
    # The push endpoint is set through the API, whose answer carries its new signing secret; the
    # secrets themselves are never shown here beyond their first characters.
    exclude = ["push_secret", "push_secret_previous"]
    readonly_fields = ["push_endpoint", "signing_secret", "push_secret_previous_until", "created_at", "updated_at"]

    @admin.display(description="signing secret")
    def signing_secret(self, obj):
        return f"{obj.push_secret[:10]}… (hidden; rotate it through the API)" if obj.push_secret else "-"


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["notification_id", "recipient", "kind", "sender", "short_message", "campaign_id", "delivered_at"]
    list_filter = ["kind"]
    search_fields = ["=notification_id", "=recipient__external_id"]
    list_select_related = ["recipient"]
    show_full_result_count = False  # counting a large inbox table on every page is slow

    @admin.display(description="message")
    def short_message(self, obj):
        return obj.message[:80]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    """Topic subscriptions: who a notification or a campaign sent to a topic reaches."""

    list_display = ["key", "recipient", "created_at"]
    search_fields = ["=key", "=recipient__external_id"]
    list_select_related = ["recipient"]
    raw_id_fields = ["recipient"]
    show_full_result_count = False


@admin.register(NotificationKind)
class NotificationKindAdmin(admin.ModelAdmin):
    """Registered kinds (the built-in ones are code). Never deleted: their names are in stored
    notifications and preferences, and every API process remembers the kinds it has seen."""

    list_display = ["name", "urgent", "created_at"]
    search_fields = ["name"]

    def get_readonly_fields(self, request, obj=None):
        return ["name", "created_at"] if obj else ["created_at"]

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        kind_registry.kind_remember(obj.name)


class TemplateForm(forms.ModelForm):
    """The API's checks (kind, BCP 47 locale, every part parsed: the error names its line), and sample
    values for the preview shown after saving."""

    preview_actor = forms.CharField(required=False, initial="2", help_text="Preview: the sender's id.")
    preview_data = forms.JSONField(required=False, initial=dict, help_text='Preview: the data, e.g. {"post": "Hi"}.')

    class Meta:
        model = Template
        fields = ["kind", "channel", "locale", "title", "body", "subject", "text", "html"]

    def clean_kind(self):
        kind = self.cleaned_data["kind"]
        if not kind_registry.kind_exists(kind, campaign_kinds=False):
            raise forms.ValidationError(f"Not a kind: one of {kind_registry.kind_choices_text(campaign_kinds=False)}.")
        return kind

    def clean_locale(self):
        try:
            return templating.locale_normalize(self.cleaned_data["locale"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_preview_data(self):
        data = self.cleaned_data.get("preview_data") or {}
        if not isinstance(data, dict):
            raise forms.ValidationError("A JSON object.")
        return data

    def clean(self):
        cleaned = super().clean()
        if "channel" in cleaned:
            for part, errors in templating.parts_errors(cleaned["channel"], cleaned).items():
                self.add_error(part, errors)
        return cleaned


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ["kind", "channel", "locale_or_default", "updated_at"]
    list_filter = ["channel", "kind"]
    search_fields = ["kind", "=locale"]
    readonly_fields = ["preview", "updated_at"]
    fieldsets = [
        (None, {"fields": ["kind", "channel", "locale"]}),
        ("In-app and webhook", {"fields": ["title", "body"]}),
        ("Email", {"fields": ["subject", "text", "html"]}),
        ("Preview", {"fields": ["preview_actor", "preview_data", "preview", "updated_at"],
                     "description": "Saved, the template is rendered with these values (Save and continue editing)."}),
    ]

    @admin.display(description="locale")
    def locale_or_default(self, obj):
        return obj.locale or "(default)"

    @admin.display(description="rendered")
    def preview(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        sample = getattr(obj, "_preview_sample", {"actor": "2", "data": {}})
        try:
            rendered = self._render(obj, **sample)
        except templating.TemplateError as exc:
            return format_html("<pre>{}</pre>", str(exc))
        return format_html("<dl>{}</dl>", format_html_join(
            "", "<dt>{}</dt><dd><pre style='white-space: pre-wrap'>{}</pre></dd>", rendered.items()))

    @staticmethod
    def _render(obj: Template, *, actor: str, data: dict) -> dict[str, str]:
        compiled = templating.compile_parts(id=obj.pk, kind=obj.kind, channel=obj.channel, locale=obj.locale,
                                            parts=obj.parts)
        context = templating.render_context(actor=actor, recipient_id="1", recipient_locale=obj.locale,
                                            recipient_attributes={}, data=data, kind=obj.kind)
        return templating.render(compiled, context)

    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in TemplateForm.Meta.fields}
        if change:
            services.template_update(template=obj, **fields)
        else:
            obj.pk = services.template_create(**fields).pk
        sample = {"actor": form.cleaned_data.get("preview_actor") or "", "data": form.cleaned_data.get("preview_data") or {}}
        request.session[f"template-preview-{obj.pk}"] = sample
        try:
            rendered = self._render(obj, **sample)
            messages.info(request, "Preview: " + " | ".join(f"{k}: {v[:200]}" for k, v in rendered.items()))
        except templating.TemplateError as exc:
            messages.warning(request, f"Saved, but it does not render with the preview data: {exc}")

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj._preview_sample = request.session.get(f"template-preview-{obj.pk}", {"actor": "2", "data": {}})
        return obj
