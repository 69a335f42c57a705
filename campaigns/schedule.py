"""When a held campaign's parts are due: pure functions (no queries), unit-tested in
campaigns/tests/test_schedule.py.

A campaign with `send_at` alone is one part, CAMPAIGN_ZONE_ALL, due then. With `local_time` ("09:00")
it is one part per time zone of its recipients, each due at the first instant at or after its start
(send_at, or now when it is absent or past) at which the wall clock in that zone reads `local_time`
(inbox.quiet_hours.local_instant: a time that happens twice counts at its first occurrence, one the
clocks skip is the instant of the change).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, time, timedelta

from core.messages import CAMPAIGN_ZONE_ALL
from inbox import quiet_hours as quiet


def local_time_next(*, start: datetime, wall: time, zone_name: str) -> datetime:
    """The first instant at or after `start` (aware) at which the wall clock in `zone_name` (blank, or
    a name not known here: DEFAULT_TIMEZONE) reads `wall`."""
    tz = quiet.zone(zone_name)
    day = start.astimezone(tz).date()
    for offset in range(3):  # today's, else tomorrow's (a third day only around a skipped day)
        instant = quiet.local_instant(day + timedelta(days=offset), wall, tz)
        if instant >= start:
            return instant
    raise AssertionError("unreachable: a wall time recurs within two days")


def zones_due(*, start: datetime, local_time: time | None, recipients_by_zone: Collection[str]) -> dict[str, datetime]:
    """When each part is due: with `local_time`, one per zone of `recipients_by_zone`; without it,
    CAMPAIGN_ZONE_ALL at `start`."""
    if local_time is None:
        return {CAMPAIGN_ZONE_ALL: start}
    return {name: local_time_next(start=start, wall=local_time, zone_name=name) for name in sorted(recipients_by_zone)}
