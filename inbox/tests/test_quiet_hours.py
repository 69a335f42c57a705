"""Quiet hours' time arithmetic (inbox/quiet_hours.py): plain unit tests, no database."""

from datetime import datetime, time
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest

from inbox.quiet_hours import QuietHours, local_instant, parse_hh_mm, quiet_until, timezone_valid, zone

UTC = dt_timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours(time(22, 0), time(8, 0))
LUNCH = QuietHours(time(12, 0), time(13, 30))


def at(tz, *args) -> datetime:
    return datetime(*args, tzinfo=tz)


@pytest.mark.parametrize(("now", "until"), [
    (at(BERLIN, 2026, 6, 10, 23, 0), at(BERLIN, 2026, 6, 11, 8, 0)),  # evening: until tomorrow's end
    (at(BERLIN, 2026, 6, 11, 3, 0), at(BERLIN, 2026, 6, 11, 8, 0)),  # after midnight: the window that began yesterday
    (at(BERLIN, 2026, 6, 10, 22, 0), at(BERLIN, 2026, 6, 11, 8, 0)),  # exactly at start: quiet
    (at(BERLIN, 2026, 6, 11, 8, 0), None),  # exactly at end: not quiet
    (at(BERLIN, 2026, 6, 11, 7, 59, 59), at(BERLIN, 2026, 6, 11, 8, 0)),
    (at(BERLIN, 2026, 6, 11, 12, 0), None),
    (at(BERLIN, 2026, 6, 10, 21, 59, 59), None),
])
def test_a_window_across_midnight(now, until):
    assert quiet_until(now, NIGHT, BERLIN) == until


@pytest.mark.parametrize(("now", "until"), [
    (at(BERLIN, 2026, 6, 10, 12, 0), at(BERLIN, 2026, 6, 10, 13, 30)),
    (at(BERLIN, 2026, 6, 10, 13, 29), at(BERLIN, 2026, 6, 10, 13, 30)),
    (at(BERLIN, 2026, 6, 10, 13, 30), None),
    (at(BERLIN, 2026, 6, 10, 11, 59), None),
    (at(BERLIN, 2026, 6, 10, 23, 0), None),
])
def test_a_window_within_a_day(now, until):
    assert quiet_until(now, LUNCH, BERLIN) == until


def test_now_in_another_zone_is_read_in_the_recipients():
    # 21:30 UTC in June is 23:30 in Berlin: quiet there, until 06:00 UTC.
    assert quiet_until(at(UTC, 2026, 6, 10, 21, 30), NIGHT, BERLIN) == at(UTC, 2026, 6, 11, 6, 0)
    assert quiet_until(at(UTC, 2026, 6, 10, 21, 30), NIGHT, ZoneInfo("America/Los_Angeles")) is None  # 14:30 there


def test_the_answer_is_utc_and_comparable():
    until = quiet_until(at(UTC, 2026, 6, 10, 21, 30), NIGHT, BERLIN)
    assert until.utcoffset().total_seconds() == 0


def test_a_night_when_the_clocks_go_forward_is_an_hour_shorter():
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT. 22:00 EST (03:00 UTC) to 08:00 EDT (12:00 UTC): 9 h.
    now = at(NEW_YORK, 2026, 3, 7, 23, 0)
    assert quiet_until(now, NIGHT, NEW_YORK) == at(UTC, 2026, 3, 8, 12, 0)


def test_a_night_when_the_clocks_go_back_is_an_hour_longer():
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST. 22:00 EDT (02:00 UTC) to 08:00 EST (13:00 UTC): 11 h.
    assert quiet_until(at(NEW_YORK, 2026, 10, 31, 23, 0), NIGHT, NEW_YORK) == at(UTC, 2026, 11, 1, 13, 0)
    assert quiet_until(at(UTC, 2026, 11, 1, 12, 59), NIGHT, NEW_YORK) == at(UTC, 2026, 11, 1, 13, 0)


def test_an_end_the_clocks_skip_is_the_instant_of_the_change():
    # 02:30 never happens in New York on 2026-03-08: the window ends at the change, 03:00 EDT (07:00 UTC).
    hours = QuietHours(time(1, 0), time(2, 30))
    assert quiet_until(at(NEW_YORK, 2026, 3, 8, 1, 45), hours, NEW_YORK) == at(UTC, 2026, 3, 8, 7, 0)
    assert local_instant(datetime(2026, 3, 8).date(), time(2, 30), NEW_YORK) == at(UTC, 2026, 3, 8, 7, 0)
    # a start the clocks skip: the window begins at the change
    late = QuietHours(time(2, 30), time(6, 0))
    assert quiet_until(at(UTC, 2026, 3, 8, 6, 59, 59), late, NEW_YORK) is None  # 01:59:59 EST
    assert quiet_until(at(UTC, 2026, 3, 8, 7, 0), late, NEW_YORK) == at(UTC, 2026, 3, 8, 10, 0)  # 03:00 EDT


def test_an_end_that_happens_twice_ends_at_its_first_occurrence():
    # 01:30 happens twice in New York on 2026-11-01 (05:30 UTC in EDT, 06:30 UTC in EST): the first ends it.
    hours = QuietHours(time(23, 0), time(1, 30))
    assert quiet_until(at(UTC, 2026, 11, 1, 4, 0), hours, NEW_YORK) == at(UTC, 2026, 11, 1, 5, 30)
    assert quiet_until(at(UTC, 2026, 11, 1, 5, 30), hours, NEW_YORK) is None
    assert quiet_until(at(UTC, 2026, 11, 1, 6, 15), hours, NEW_YORK) is None  # 01:15 again, after the window: one interval


def test_a_zone_without_dst_and_one_with_a_half_hour_offset():
    kolkata = ZoneInfo("Asia/Kolkata")  # +05:30
    assert quiet_until(at(UTC, 2026, 1, 1, 17, 0), NIGHT, kolkata) == at(UTC, 2026, 1, 2, 2, 30)  # 22:30 there


@pytest.mark.parametrize("value", ["22:00", "00:00", "23:59", "08:05"])
def test_hh_mm_accepted(value):
    assert parse_hh_mm(value).strftime("%H:%M") == value


@pytest.mark.parametrize("value", ["24:00", "7:00", "07:60", "0700", "07:00:00", " 07:00", "07:00\n", "", None, 700,
                                   "٠٧:٠٠"])
def test_hh_mm_refused(value):
    with pytest.raises(ValueError):
        parse_hh_mm(value)


def test_stored_forms():
    assert QuietHours.of({"start": "22:00", "end": "08:00"}) == NIGHT
    assert NIGHT.encode() == {"start": "22:00", "end": "08:00"}
    assert QuietHours.of(None) is None
    assert QuietHours.of({"start": "22:00", "end": "22:00"}) is None
    assert QuietHours.of({"start": "25:00", "end": "08:00"}) is None


def test_time_zones(settings):
    assert timezone_valid("Europe/Berlin") and timezone_valid("UTC")
    assert not any(timezone_valid(v) for v in ("Mars/Olympus", "", "../../etc/passwd", "europe/berlin", None, 3))
    settings.DEFAULT_TIMEZONE = "Asia/Tokyo"
    assert zone("") == ZoneInfo("Asia/Tokyo") and zone("Europe/Berlin") == BERLIN


def test_a_default_time_zone_that_is_not_iana_stops_a_process_with_one_line():
    import os
    import subprocess
    import sys
    from pathlib import Path

    base = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "notifications_project.settings", "DEFAULT_TIMEZONE": "Mars/Base",
           "SECRET_KEY": "x" * 32}
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, cwd=base,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "Configuration error: DEFAULT_TIMEZONE='Mars/Base' is not an accepted value.")
