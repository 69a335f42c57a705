"""Quiet hours and recipients' time zones: pure functions (no queries), unit-tested in
inbox/tests/test_quiet_hours.py.

A recipient's quiet hours are a daily window of wall-clock times in its time zone, `start` included and
`end` excluded, crossing midnight when start > end ("22:00" to "08:00"). During it the worker holds the
external channels (email, webhook) of non-urgent notifications until the window ends
(`quiet_until`).

Days when the clocks change: the window of a day runs from the first instant the wall clock reads
`start` to the first instant after it that it reads `end` (or later): a time that happens twice (the
clocks go back) counts at its first occurrence, and a time that never happens (the clocks go forward
over it) is the instant of the change. So a window is one interval of real time, never two.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings

_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
TIMEZONE_MAX_LENGTH = 64


# Files of the tz database's directory that are not zones of its own: "localtime" is a link to the
# host's zone (found from outside: accepted, each host would read it otherwise), "posixrules" a rule file.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def timezone_valid(name: object) -> bool:
    """An IANA time zone name this machine knows ("Europe/Berlin", "UTC"): the cached list, never a
    file opened for a name a client sent."""
    return isinstance(name, str) and name in _iana_names()


def timezone_validator(value: str) -> None:
    """The model field's check (the admin's form): blank, or an IANA name."""
    from django.core.exceptions import ValidationError

    if value and not timezone_valid(value):
        raise ValidationError(f'"{value}" is not an IANA time zone (such as "Europe/Berlin").')


def zone(name: str) -> zoneinfo.ZoneInfo:
    """A recipient's time zone: its own, or DEFAULT_TIMEZONE when blank (or not one we know)."""
    return zoneinfo.ZoneInfo(name if timezone_valid(name) else settings.DEFAULT_TIMEZONE)


def parse_hh_mm(value: object) -> time:
    """"22:00" -> time(22, 0); ValueError for anything else (24 h, two digits each: "24:00" and "7:00" are not)."""
    if not isinstance(value, str) or not (match := _HH_MM.fullmatch(value)):
        raise ValueError("must be HH:MM, 24 h (00:00 to 23:59)")
    return time(int(match[1]), int(match[2]))


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def of(cls, value: object) -> QuietHours | None:
        """From the stored form {"start": "22:00", "end": "08:00"}; None for none (or a form not ours)."""
        if not isinstance(value, dict):
            return None
        try:
            hours = cls(parse_hh_mm(value.get("start")), parse_hh_mm(value.get("end")))
        except ValueError:
            return None
        return None if hours.start == hours.end else hours

    def encode(self) -> dict:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


def local_instant(day: date, wall: time, tz: zoneinfo.ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock in `tz` reads `wall` on `day`; for a wall time
    the clocks skip (a gap), the instant of the change."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(dt_timezone.utc)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(dt_timezone.utc)
    if first <= second:  # an ordinary time (equal), or one that happens twice (fold=0 is the first)
        return first
    # A gap: fold=0 reads it with the offset before the change (after the real change), fold=1 with the
    # one after it (before the change). The change is the first whole second in (second, first] whose
    # wall time is at or past `naive`.
    lo, hi = 0, int((first - second).total_seconds())
    while lo < hi:
        mid = (lo + hi) // 2
        if (second + timedelta(seconds=mid)).astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return second + timedelta(seconds=lo)


def quiet_until(now: datetime, hours: QuietHours, tz: zoneinfo.ZoneInfo) -> datetime | None:
    """If `now` (aware) is within the quiet hours in `tz`, the instant (UTC) they end; else None.
    `start` is within them, `end` is not."""
    today = now.astimezone(tz).date()
    crosses_midnight = hours.start > hours.end
    for day in (today - timedelta(days=1), today):  # the window that began yesterday, or today
        start = local_instant(day, hours.start, tz)
        end = local_instant(day + timedelta(days=1) if crosses_midnight else day, hours.end, tz)
        if start <= now < end:
            return end
    return None
