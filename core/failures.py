"""What went wrong, by what it is: an outage, a passing conflict, or something about the record.

The consume loop asks `failure_kind` about every exception a handler raises:

- OUTAGE: the database or the broker is unreachable or refusing work (PostgreSQL SQLSTATE classes 08
  connection exception, 53 insufficient resources, 57P operator intervention, 58 system error, a
  connection lost without a SQLSTATE; a Kafka broker error that is not about one record). Nothing is
  wrong with the batch: keep it, pause, wait, try again, for as long as it takes.
- TRANSIENT: a conflict with other work that passes on its own (serialization failure, deadlock,
  statement timeout, lock not available). Try the same batch again a few times, then treat it as
  the record's fault, so that it can never loop forever.
- POISON: anything else (a data error such as NUL in text, a value too long, an encoding error, a bug
  that one record triggers). The batch is split until the one task that fails is found; that task
  is dead-lettered and everything else is delivered.
"""

from __future__ import annotations

import enum
import math
import random
import sqlite3

import psycopg
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError


class FailureKind(enum.Enum):
    OUTAGE = "outage"
    TRANSIENT = "transient"
    POISON = "poison"


OUTAGE_SQLSTATE_PREFIXES = ("08", "53", "57P", "58")
TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57014",  # query_canceled (statement_timeout)
    "55P03",  # lock_not_available (lock_timeout)
}
# Broker errors about one record rather than the broker: retrying the same record cannot help.
RECORD_KAFKA_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def failure_kind(exc: BaseException) -> FailureKind:
    """Classify an exception a handler raised (Django wraps driver errors: the cause chain is read)."""
    for cause in _causes(exc):
        if isinstance(cause, psycopg.Error):
            sqlstate = cause.sqlstate
            if sqlstate is None:
                # No SQLSTATE: the client lost the server (closed connection, failed to consume input).
                lost = isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError))
                return FailureKind.OUTAGE if lost else FailureKind.POISON
            if sqlstate.startswith(OUTAGE_SQLSTATE_PREFIXES):
                return FailureKind.OUTAGE
            if sqlstate in TRANSIENT_SQLSTATES:
                return FailureKind.TRANSIENT
            return FailureKind.POISON
        if isinstance(cause, sqlite3.OperationalError):
            return FailureKind.TRANSIENT  # "database is locked": development only
        if isinstance(cause, KafkaError):
            return FailureKind.POISON if isinstance(cause, RECORD_KAFKA_ERRORS) else FailureKind.OUTAGE
    # Django's InterfaceError without a driver cause: "connection already closed".
    from django.db import InterfaceError

    if isinstance(exc, InterfaceError):
        return FailureKind.OUTAGE
    return FailureKind.POISON


def safe_text(value: object, max_length: int | None = None) -> str:
    """Text that PostgreSQL and any encoder can store: no NUL, no lone surrogates, bounded length."""
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text[:max_length] if max_length is not None else text


def describe(exc: BaseException) -> str:
    """One line naming the error, safe to store."""
    return safe_text(f"{type(exc).__name__}: {exc}".strip().replace("\n", " "), 1000)


def backoff_delay(*, attempt: int, first: float, factor: float = 2.0, cap: float = math.inf,
                  rng: random.Random = random) -> float:
    """The one backoff schedule: `first` seconds before attempt 2, times `factor` for each attempt after,
    at most `cap`, with +-20 % jitter so that the retries of one outage do not arrive together."""
    return min(first * factor ** (attempt - 1), cap) * rng.uniform(0.8, 1.2)


class Backoff:
    """Waiting out an outage: 0.5 s doubling up to 15 s (`backoff_delay`), from the start after `reset()`."""

    def __init__(self, *, first: float = 0.5, cap: float = 15.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 1

    def next(self) -> float:
        delay = backoff_delay(attempt=self.attempt, first=self.first, cap=self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 1
