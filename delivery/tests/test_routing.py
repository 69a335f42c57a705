"""The routing decision's whole table (delivery/routing.py): every skip with its reason, every set of
channels, and which rule wins when several apply. Pure: no database, no settings."""

import itertools

import pytest

from campaigns.models import CampaignStatus
from delivery.models import DeliveryOutcome
from delivery.routing import Route, route
from inbox.services import RecipientAddress

NOBODY = None
PLAIN = RecipientAddress(pk=1, email="", push_endpoint="")  # most recipients: the inbox only
MAILED = RecipientAddress(pk=2, email="tito@example.com", push_endpoint="")
HOOKED = RecipientAddress(pk=3, email="", push_endpoint="https://hooks.example.com/n")
BOTH = RecipientAddress(pk=4, email="tito@example.com", push_endpoint="https://hooks.example.com/n")
GATEWAY = "https://gateway.example.com/push"

USER = {"campaign_task": False, "campaign_status": None}
CAMPAIGN = {"campaign_task": True, "campaign_status": CampaignStatus.DISPATCHED}


def _route(*, task=USER, recipient=PLAIN, kind="like", kinds=None, channels=None, gateway="", expired=False):
    return route(**task, recipient=recipient, kind=kind, opt_outs=(kinds or {}, channels or {}), gateway=gateway,
                 expired=expired)


def skipped(reason: str) -> Route:
    return Route(DeliveryOutcome.SKIPPED, reason)


def delivered(*, in_app: bool = True, external: tuple[str, ...] = ()) -> Route:
    return Route(DeliveryOutcome.DELIVERED, "", in_app, external)


# (case, arguments, route)
TABLE = [
    # 0. Its expires_at passed: never delivered late, by any channel.
    ("expired", {"expired": True}, skipped("expired")),
    ("expired, with every channel", {"expired": True, "recipient": BOTH, "gateway": GATEWAY}, skipped("expired")),
    ("not expired", {"expired": False, "recipient": HOOKED}, delivered(external=("webhook",))),
    # 1. A campaign task whose campaign is not found.
    ("campaign not found", {"task": {"campaign_task": True, "campaign_status": None}}, skipped("campaign not found")),
    # 2. Its campaign cancelled.
    ("campaign cancelled", {"task": {"campaign_task": True, "campaign_status": CampaignStatus.CANCELLED}},
     skipped("campaign cancelled")),
    # A campaign in any other state delivers.
    *[(f"campaign {status}", {"task": {"campaign_task": True, "campaign_status": status}, "kind": "offer"},
       delivered())
      for status in CampaignStatus.values if status != CampaignStatus.CANCELLED],
    # 3. The recipient not found (deleted), for either kind of task.
    ("user task, recipient deleted", {"recipient": NOBODY}, skipped("recipient deleted")),
    ("campaign task, recipient deleted", {"task": CAMPAIGN, "recipient": NOBODY}, skipped("recipient deleted")),
    # 4. Opted out of the kind; other kinds' opt-outs and opt-ins change nothing.
    ("opted out of the kind", {"kinds": {"like": False}}, skipped("opted out of like")),
    ("opted out of a campaign's kind", {"task": CAMPAIGN, "kind": "offer", "kinds": {"offer": False}},
     skipped("opted out of offer")),
    ("opted out of another kind", {"kinds": {"follow": False}}, delivered()),
    ("opted in to the kind", {"kinds": {"like": True}}, delivered()),
    # 5. No channel left.
    ("in-app off, no address", {"channels": {"in_app": False}}, skipped("opted out of every channel")),
    ("in-app off, email off", {"recipient": MAILED, "channels": {"in_app": False, "email": False}},
     skipped("opted out of every channel")),
    ("in-app off, webhook off", {"recipient": HOOKED, "channels": {"in_app": False, "webhook": False}},
     skipped("opted out of every channel")),
    ("in-app off, gateway's webhook off", {"gateway": GATEWAY, "channels": {"in_app": False, "webhook": False}},
     skipped("opted out of every channel")),
    ("every channel off", {"recipient": BOTH, "gateway": GATEWAY,
                           "channels": {"in_app": False, "webhook": False, "email": False}},
     skipped("opted out of every channel")),
    # 6. Delivered: in-app, and each external channel the recipient has and did not opt out of.
    ("the inbox only", {}, delivered()),
    ("channels opted in", {"channels": {"in_app": True, "email": True, "webhook": True}}, delivered()),
    ("an email address", {"recipient": MAILED}, delivered(external=("email",))),
    ("a push endpoint", {"recipient": HOOKED}, delivered(external=("webhook",))),
    ("the push gateway", {"gateway": GATEWAY}, delivered(external=("webhook",))),
    ("a push endpoint and the gateway: one webhook", {"recipient": HOOKED, "gateway": GATEWAY},
     delivered(external=("webhook",))),
    ("both: webhook first", {"recipient": BOTH}, delivered(external=("webhook", "email"))),
    ("email and the gateway", {"recipient": MAILED, "gateway": GATEWAY}, delivered(external=("webhook", "email"))),
    ("both, email off", {"recipient": BOTH, "channels": {"email": False}}, delivered(external=("webhook",))),
    ("both, webhook off", {"recipient": BOTH, "channels": {"webhook": False}}, delivered(external=("email",))),
    ("both, both off", {"recipient": BOTH, "channels": {"webhook": False, "email": False}}, delivered()),
    ("email only", {"recipient": MAILED, "channels": {"in_app": False}}, delivered(in_app=False, external=("email",))),
    ("webhook only", {"recipient": HOOKED, "channels": {"in_app": False}},
     delivered(in_app=False, external=("webhook",))),
    ("gateway only", {"gateway": GATEWAY, "channels": {"in_app": False}},
     delivered(in_app=False, external=("webhook",))),
    ("external only", {"recipient": BOTH, "channels": {"in_app": False}},
     delivered(in_app=False, external=("webhook", "email"))),
    ("a campaign to every channel", {"task": CAMPAIGN, "kind": "offer", "recipient": BOTH},
     delivered(external=("webhook", "email"))),
]


@pytest.mark.parametrize(("arguments", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_route(arguments, expected):
    assert _route(**arguments) == expected


# Precedence: each rule wins over every rule below it, whatever else the task has.
PRECEDENCE = [
    ("expired over the rest", {"expired": True, "task": {"campaign_task": True, "campaign_status": CampaignStatus.CANCELLED},
                               "recipient": NOBODY, "kinds": {"like": False}, "channels": {"in_app": False}}, "expired"),
    ("campaign not found over the rest", {"task": {"campaign_task": True, "campaign_status": None},
                                          "recipient": NOBODY, "kinds": {"like": False},
                                          "channels": {"in_app": False}}, "campaign not found"),
    ("campaign cancelled over the rest", {"task": {"campaign_task": True, "campaign_status": CampaignStatus.CANCELLED},
                                          "recipient": NOBODY, "kinds": {"like": False},
                                          "channels": {"in_app": False}}, "campaign cancelled"),
    ("recipient deleted over opt-outs", {"recipient": NOBODY, "kinds": {"like": False}, "channels": {"in_app": False}},
     "recipient deleted"),
    ("the kind over the channels", {"kinds": {"like": False}, "channels": {"in_app": False}}, "opted out of like"),
    ("the kind over every channel available", {"recipient": BOTH, "gateway": GATEWAY, "kinds": {"like": False}},
     "opted out of like"),
]


@pytest.mark.parametrize(("arguments", "reason"), [row[1:] for row in PRECEDENCE], ids=[row[0] for row in PRECEDENCE])
def test_precedence(arguments, reason):
    assert _route(**arguments) == skipped(reason)


def test_a_user_task_is_never_skipped_for_a_campaign():
    """A campaign's status is read only for campaign tasks (a user-to-user task has none)."""
    assert _route(task={"campaign_task": False, "campaign_status": CampaignStatus.CANCELLED}) == delivered()


@pytest.mark.parametrize(("recipient", "gateway", "in_app", "webhook", "email"), list(itertools.product(
    (PLAIN, MAILED, HOOKED, BOTH), ("", GATEWAY), (True, False, None), (True, False, None), (True, False, None))))
def test_every_channel_combination(recipient, gateway, in_app, webhook, email):
    """The whole channel table: each external channel goes out exactly when the recipient (or the gateway)
    has its address and it is not opted out (absent is on); nothing left is a skip."""
    channels = {name: value for name, value in (("in_app", in_app), ("webhook", webhook), ("email", email))
                if value is not None}
    result = _route(recipient=recipient, gateway=gateway, channels=channels)
    wants_in_app = in_app is not False
    wants_webhook = bool(recipient.push_endpoint or gateway) and webhook is not False
    wants_email = bool(recipient.email) and email is not False
    if not (wants_in_app or wants_webhook or wants_email):
        assert result == skipped("opted out of every channel")
    else:
        external = tuple(c for c, wanted in (("webhook", wants_webhook), ("email", wants_email)) if wanted)
        assert result == delivered(in_app=wants_in_app, external=external)
        assert result.delivered


def test_common_answers_are_shared_not_built_per_task():
    """The hot path: a batch of 100,000 tasks builds no route of its own for them."""
    assert _route() is _route(kind="follow")
    assert _route(recipient=BOTH) is _route(recipient=BOTH, kind="mention")
    assert _route(recipient=NOBODY) is _route(task=CAMPAIGN, recipient=NOBODY)
    assert not _route(recipient=NOBODY).delivered
