"""Which kinds exist: the built-in ones (core.messages.Kind) and the ones services registered
(NotificationKind rows), checked wherever a client names a kind (sends, preferences, templates, the
inbox's filter).

Each process remembers the registered kinds it has seen. Kinds are never deleted (neither the API nor
the admin deletes one), so a kind remembered is a kind that exists: a send of a known kind costs no
query, and the one-statement send stays one statement. A name not remembered is looked up once (a
kind registered by another process is found then); an unknown name costs a query and is a 400.
"""

from __future__ import annotations

import re

from core.messages import CAMPAIGN_KINDS, USER_TO_USER_KINDS, Kind

BUILT_IN = frozenset(Kind.values)
BUILT_IN_USER_TO_USER = frozenset(k.value for k in USER_TO_USER_KINDS)
BUILT_IN_CAMPAIGN = frozenset(k.value for k in CAMPAIGN_KINDS)
# Never held back (digests; later quiet hours): alerts.
BUILT_IN_URGENT = frozenset({Kind.ALERT.value})

_registered: set[str] = set()
REMEMBERED_MAX = 10_000


def kind_registered(name: str) -> bool:
    """Whether a service registered this kind (remembered, or found in the database and remembered)."""
    if name in _registered:
        return True
    from inbox.models import KIND_NAME_REGEX, NotificationKind

    # Only a name a kind could have is looked up (one with a NUL byte would even fail the query).
    if not isinstance(name, str) or not re.fullmatch(KIND_NAME_REGEX, name):
        return False
    if not NotificationKind.objects.filter(name=name).exists():
        return False
    if len(_registered) < REMEMBERED_MAX:
        _registered.add(name)
    return True


def kind_remember(name: str) -> None:
    """A kind this process registered."""
    if len(_registered) < REMEMBERED_MAX:
        _registered.add(name)


def kind_exists(name: str, *, campaign_kinds: bool = True) -> bool:
    """Built in (the campaign kinds too, unless `campaign_kinds` is false) or registered."""
    if name in (BUILT_IN if campaign_kinds else BUILT_IN_USER_TO_USER):
        return True
    return name not in BUILT_IN and kind_registered(name)


def kinds_forget() -> None:
    """For tests, whose database rolls back under the memory."""
    _registered.clear()


def kind_choices_text(*, campaign_kinds: bool = True) -> str:
    built_in = [k.value for k in Kind if campaign_kinds or k.value in BUILT_IN_USER_TO_USER]
    return f"{', '.join(built_in)}, or a kind registered at /api/v1/kinds/"
