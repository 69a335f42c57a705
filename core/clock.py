"""The one clock that decides when waiting work is due.

Every due comparison takes its time from `now()` and passes it to the SQL as a parameter (never the
database's own `now()`), so that a test can move time for the scheduler, for the database and for
whatever later rules depend on it (delays, digest windows, quiet hours) in one place:

    with clock.moved(hours=3):
        ...  # due items three hours ahead are due now

`CLOCK_OFFSET_SECONDS` (a development and test setting, 0 by default) moves it for a whole process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

_lock = threading.Lock()
_moved = timedelta(0)


def now() -> datetime:
    return timezone.now() + timedelta(seconds=settings.CLOCK_OFFSET_SECONDS) + _moved


def advance(**delta: float) -> None:
    """Move the clock forward (or back, with negative values) for this process: `advance(seconds=30)`."""
    global _moved
    with _lock:
        _moved += timedelta(**delta)


@contextlib.contextmanager
def moved(**delta: float) -> Iterator[None]:
    """The clock moved by `delta` inside the block, back where it was after it."""
    advance(**delta)
    try:
        yield
    finally:
        advance(**{unit: -value for unit, value in delta.items()})
