"""The routing decision for one task: skip it (and why), or deliver it in-app and/or to which external
channels. A pure function of values the caller has read (no queries, no settings), so that the whole
decision table is unit-tested (delivery/tests/test_routing.py); `deliveries_settle` does the writes.

It runs for every task of a batch: the common answers are shared constants, built once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from campaigns.models import CampaignStatus
from core.messages import Channel
from delivery.models import DeliveryOutcome

_IN_APP = Channel.IN_APP.value
_WEBHOOK = Channel.WEBHOOK.value
_EMAIL = Channel.EMAIL.value
_CANCELLED = CampaignStatus.CANCELLED.value


class Addressee(Protocol):
    """Where a recipient receives external channels (inbox.services.RecipientAddress)."""

    email: str
    push_endpoint: str


@dataclass(frozen=True, slots=True)
class Route:
    """What becomes of one task: its ledger outcome and reason, and where it goes if delivered."""

    outcome: str  # DeliveryOutcome.DELIVERED or SKIPPED
    reason: str = ""  # why it is skipped
    in_app: bool = False  # an inbox row
    external: tuple[str, ...] = ()  # external channels (Channel values), in the order they are sent

    @property
    def delivered(self) -> bool:
        return self.outcome == DeliveryOutcome.DELIVERED


CAMPAIGN_NOT_FOUND = Route(DeliveryOutcome.SKIPPED, "campaign not found")
CAMPAIGN_CANCELLED = Route(DeliveryOutcome.SKIPPED, "campaign cancelled")
RECIPIENT_DELETED = Route(DeliveryOutcome.SKIPPED, "recipient deleted")
EVERY_CHANNEL_OPTED_OUT = Route(DeliveryOutcome.SKIPPED, "opted out of every channel")
EXPIRED = Route(DeliveryOutcome.SKIPPED, "expired")

# Every delivered route, by (in-app?, webhook?, email?).
_DELIVER = {
    (in_app, webhook, email): Route(
        DeliveryOutcome.DELIVERED, in_app=in_app,
        external=tuple(c for c, wanted in ((_WEBHOOK, webhook), (_EMAIL, email)) if wanted),
    )
    for in_app in (True, False)
    for webhook in (True, False)
    for email in (True, False)
    if in_app or webhook or email
}

NO_OPT_OUTS: tuple[Mapping[str, bool], Mapping[str, bool]] = ({}, {})


def route(
    *,
    campaign_task: bool,
    campaign_status: str | None,
    recipient: Addressee | None,
    kind: str,
    opt_outs: tuple[Mapping[str, bool], Mapping[str, bool]] = NO_OPT_OUTS,
    gateway: str = "",
    expired: bool = False,
) -> Route:
    """Route one task. The first rule that applies decides:

    0. its `expires_at` has passed (`expired`): skipped, "expired" (never delivered late);
    1. a campaign task whose campaign is not found (`campaign_status` None): skipped, "campaign not found";
    2. its campaign cancelled: skipped, "campaign cancelled";
    3. the recipient not found (`recipient` None: deleted): skipped, "recipient deleted";
    4. the recipient opted out of the kind (`opt_outs[0][kind]` is false): skipped, "opted out of <kind>";
    5. no channel left: skipped, "opted out of every channel";
    6. delivered: in-app unless opted out of `in_app`; by webhook if the recipient has a push endpoint
       or there is a push `gateway`, and by email if it has an email address, unless opted out of
       that channel.

    `opt_outs` is the recipient's (kinds, channels) preferences, each {name: false} to opt out;
    `kind` is the notification's kind (its campaign's, for a campaign task).
    """
    if expired:
        return EXPIRED
    if campaign_task:
        if campaign_status is None:
            return CAMPAIGN_NOT_FOUND
        if campaign_status == _CANCELLED:
            return CAMPAIGN_CANCELLED
    if recipient is None:
        return RECIPIENT_DELETED
    kinds, channels = opt_outs
    if kinds.get(kind) is False:
        return Route(DeliveryOutcome.SKIPPED, f"opted out of {kind}")
    in_app = bool(channels.get(_IN_APP, True))
    webhook = bool((recipient.push_endpoint or gateway) and channels.get(_WEBHOOK, True))
    email = bool(recipient.email and channels.get(_EMAIL, True))
    if not (in_app or webhook or email):
        return EVERY_CHANNEL_OPTED_OUT
    return _DELIVER[(in_app, webhook, email)]
