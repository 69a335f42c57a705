"""The worker's templates: the content of a batch's notifications sent without a message, rendered
from their kind's templates in each recipient's locale.

Per batch: one query for the recipients' locales and attributes, one for the templates the batch
can use (ids and times only), and one more for the sources of those this process has not compiled
yet (compiled once per process, by id and updated_at: inbox/templating.py). Then a render per
notification and channel, no query. A notification whose template fails to render, or that has no
template at all, raises TemplateRenderError: the consumer sets that one task aside and
dead-letters it with the error (core/consumer.py), and the rest of the batch is delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from core.messages import CampaignLike, Channel, NotificationContent, NotificationTask
from delivery.routing import Route
from inbox import selectors as inbox_selectors
from inbox import templating
from inbox.services import RecipientAddress

_IN_APP = Channel.IN_APP.value
_EMAIL = Channel.EMAIL.value


@dataclass(frozen=True)
class Rendered:
    """One notification's content: in-app (also the fallback of a channel without a template of its
    own), and per external channel where it has one."""

    in_app: NotificationContent | None
    channels: Mapping[str, NotificationContent] = field(default_factory=dict)

    def for_channel(self, channel: str) -> NotificationContent:
        content = self.channels.get(channel) or self.in_app
        assert content is not None  # contents_render renders in-app wherever a channel needs it
        return content


def wants_render(task: NotificationTask, campaigns: Mapping[int, CampaignLike] | None = None) -> bool:
    """A user-to-user notification sent without a message, or a campaign's with templates of its own."""
    if task.campaign_id is None:
        return not task.message
    campaign = (campaigns or {}).get(task.campaign_id)
    return campaign is not None and bool(campaign.templates)


def contents_render(*, tasks: Sequence[NotificationTask], claimed: Set[str], routes: Mapping[str, Route],
                    recipients: Mapping[str, RecipientAddress],
                    campaigns: Mapping[int, CampaignLike] | None = None) -> dict[str, Rendered]:
    """The rendered content of each task that wants one (`wants_render`) and is to be delivered now
    (claimed in the ledger, routed to a channel), by notification id. Only the channels of its route
    are rendered. Raises TemplateRenderError for the first one that cannot be. A campaign's recipient
    whose locale has no template of the campaign's gets the campaign's title and body."""
    campaigns = campaigns or {}
    wanted = [t for t in tasks if wants_render(t, campaigns) and t.notification_id in claimed
              and routes[t.notification_id].delivered and t.recipient in recipients]
    if not wanted:
        return {}
    profiles = inbox_selectors.recipient_profiles(pks=sorted({recipients[t.recipient].pk for t in wanted}))
    chains = {pk: templating.locale_chain(locale) for pk, (locale, _) in profiles.items()}
    locales = sorted({locale for chain in chains.values() for locale in chain} | {""})
    kinds = sorted({t.kind for t in wanted if t.campaign_id is None})
    compiled = _templates_compiled(kinds=kinds, locales=locales) if kinds else {}

    rendered: dict[str, Rendered] = {}
    for task in wanted:
        pk = recipients[task.recipient].pk
        locale, attributes = profiles.get(pk, ("", {}))
        chain = chains.get(pk, ("",))
        route = routes[task.notification_id]
        in_app_wanted, external = route.in_app, route.external
        campaign = campaigns.get(task.campaign_id) if task.campaign_id is not None else None
        if campaign is not None:
            kind, source, base = campaign.kind, campaign_templates_compiled(campaign), NotificationContent.of_campaign(campaign)
            context = templating.render_context(actor=campaign.sender, recipient_id=task.recipient, recipient_locale=locale,
                                                recipient_attributes=attributes, data=campaign.data, kind=kind)
        else:
            kind, source, base = task.kind, compiled, NotificationContent.of_task(task)
            context = templating.render_context(actor=task.sender, recipient_id=task.recipient, recipient_locale=locale,
                                                recipient_attributes=attributes, data=task.data, kind=kind,
                                                **_digest_variables(task))
        own = {}
        for channel in external:
            template = _first(source, kind, channel, chain)
            if template is not None:
                own[channel] = _content(base, channel, templating.render(template, context))
        in_app = None
        if in_app_wanted or len(own) < len(external):
            template = _first(source, kind, _IN_APP, chain)
            if template is None and campaign is not None:
                rendered[task.notification_id] = Rendered(base, own)  # the campaign's title and body
                continue
            if template is None:
                raise templating.TemplateMissing(
                    f"no in_app template of {task.kind} in {', '.join(c or 'the default locale' for c in chain)} "
                    "(deleted since the notification was accepted?)")
            in_app = _content(base, _IN_APP, templating.render(template, context))
        rendered[task.notification_id] = Rendered(in_app, own)
    return rendered


def campaign_in_app(campaign: CampaignLike, *, recipient_id: str, locale: str, attributes: Mapping) -> tuple[str, str]:
    """A campaign's in-app (title, message) for one recipient: its own template of the recipient's
    locale rendered, or its title and body. Raises TemplateRenderError."""
    template = _first(campaign_templates_compiled(campaign), campaign.kind, _IN_APP, templating.locale_chain(locale or ""))
    if template is None:
        return campaign.title, campaign.body
    # A template that reads nothing of the recipient (a translation: `data`, `actor`, `kind`) says the
    # same to every recipient of a locale: rendered once per process, locale and template.
    shared = _recipient_independent(template)
    key = (campaign.id, template.locale, locale)  # (a campaign's templates never change)
    if shared and (text := _shared_texts.get(key)) is not None:
        return text
    context = templating.render_context(actor=campaign.sender, recipient_id=recipient_id, recipient_locale=locale,
                                        recipient_attributes=attributes, data=campaign.data, kind=campaign.kind)
    parts = templating.render(template, context)
    text = parts.get("title", ""), parts.get("body", "")
    if shared:
        if len(_shared_texts) >= SHARED_TEXTS_MAX:
            _shared_texts.clear()
        _shared_texts[key] = text
    return text


# What a campaign's template that reads nothing of the recipient may read (its variables but `recipient`).
_NOT_THE_RECIPIENT = frozenset({"actor", "kind", "data"})
_independent: dict[tuple[int | None, str, str], bool] = {}
_shared_texts: dict[tuple[int, str, str], tuple[str, str]] = {}
SHARED_TEXTS_MAX = 4096


def _recipient_independent(template: templating.Compiled) -> bool:
    """(By campaign, channel and locale: a campaign's templates never change.)"""
    key = (template.campaign_id, template.channel, template.locale)
    found = _independent.get(key)
    if found is None:
        if len(_independent) >= SHARED_TEXTS_MAX:
            _independent.clear()
        found = _independent[key] = templating.reads_only(template, _NOT_THE_RECIPIENT)
    return found


_campaign_compiled: dict[int, dict[tuple[str, str, str], templating.Compiled]] = {}
CAMPAIGNS_REMEMBERED = 64


def campaign_templates_compiled(campaign: CampaignLike) -> dict[tuple[str, str, str], templating.Compiled]:
    """A campaign's own templates by (kind, channel, locale), compiled once per process (a campaign's
    templates never change after it is created)."""
    found = _campaign_compiled.get(campaign.id)
    if found is None:
        found = {}
        for template in campaign.templates:
            channel, locale = template["channel"], template.get("locale", "")
            try:
                compiled = templating.compile_parts(id=None, kind=campaign.kind, channel=channel, locale=locale,
                                                    parts=template)
                compiled = replace(compiled, campaign_id=campaign.id)
            except templating.TemplateSyntaxError as exc:  # stored another way than through the API
                compiled = templating.Compiled(None, campaign.kind, channel, locale, {}, error=f"{exc.part}: {exc}",
                                               campaign_id=campaign.id)
            found[(campaign.kind, channel, locale)] = compiled
        if len(_campaign_compiled) >= CAMPAIGNS_REMEMBERED:
            _campaign_compiled.pop(next(iter(_campaign_compiled)))
        _campaign_compiled[campaign.id] = found
    return found


def _digest_variables(task: NotificationTask) -> dict:
    """A digest's `count`, `actors` (the first listed), `actor_count` and `events` (delivery/digests.py)."""
    digest = task.data.get("digest") if task.notification_id.startswith("digest:") else None
    if not isinstance(digest, dict):
        return {}
    return {name: digest.get(name) for name in ("count", "actors", "actor_count", "events")}


def _first(compiled: Mapping[tuple[str, str, str], templating.Compiled], kind: str, channel: str,
           chain: Sequence[str]) -> templating.Compiled | None:
    for locale in chain:
        if (found := compiled.get((kind, channel, locale))) is not None:
            return found
    return None


def _content(base: NotificationContent, channel: str, parts: Mapping[str, str]) -> NotificationContent:
    if channel == _EMAIL:
        return replace(base, title=parts.get("subject", ""), message=parts.get("text", ""), html=parts.get("html", ""))
    return replace(base, title=parts.get("title", ""), message=parts.get("body", ""))


def _templates_compiled(*, kinds: Sequence[str], locales: Sequence[str]) -> dict[tuple[str, str, str], templating.Compiled]:
    """The batch's templates by (kind, channel, locale), compiled (from this process's cache where it can)."""
    index = inbox_selectors.template_index(kinds=kinds, locales=locales)
    found: dict[tuple[str, str, str], templating.Compiled] = {}
    missing = []
    for pk, kind, channel, locale, updated_at in index:
        cached = templating.compiled_cached((pk, updated_at))
        if cached is not None:
            found[(kind, channel, locale)] = cached
        else:
            missing.append((pk, kind, channel, locale, updated_at))
    if missing:
        sources = inbox_selectors.template_parts(ids=[row[0] for row in missing])
        for pk, kind, channel, locale, updated_at in missing:
            if pk not in sources:
                continue  # deleted since the index was read
            try:
                compiled = templating.compile_parts(id=pk, kind=kind, channel=channel, locale=locale, parts=sources[pk])
            except templating.TemplateSyntaxError as exc:
                # Saved through the API it parsed; one written another way fails the notifications using it.
                compiled = templating.Compiled(pk, kind, channel, locale, {}, error=f"{exc.part}: {exc}")
            templating.compiled_remember((pk, updated_at), compiled)
            found[(kind, channel, locale)] = compiled
    return found

