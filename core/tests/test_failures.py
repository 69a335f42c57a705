"""The classification that decides between waiting, retrying and dead-lettering (pure logic)."""

import sqlite3

import psycopg
import pytest
from django.db import DataError, InterfaceError, OperationalError
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)

from core.failures import Backoff, FailureKind, backoff_delay, failure_kind, safe_text
from core.publisher import PublishFailed


def _pg(sqlstate: str | None, base=psycopg.errors.DatabaseError) -> psycopg.Error:
    """A psycopg error with this SQLSTATE, wrapped as Django wraps it."""
    cls = psycopg.errors.lookup(sqlstate) if sqlstate else base
    return cls("x")


def _wrapped(driver_error: Exception, django_cls=OperationalError) -> Exception:
    try:
        try:
            raise driver_error
        except Exception as exc:
            raise django_cls(str(exc)) from exc
    except Exception as wrapped:
        return wrapped


@pytest.mark.parametrize("sqlstate, kind", [
    ("08006", FailureKind.OUTAGE),   # connection_failure
    ("08001", FailureKind.OUTAGE),   # cannot connect
    ("57P01", FailureKind.OUTAGE),   # admin_shutdown
    ("57P03", FailureKind.OUTAGE),   # cannot_connect_now (starting up)
    ("53300", FailureKind.OUTAGE),   # too_many_connections
    ("58030", FailureKind.OUTAGE),   # io_error
    ("40001", FailureKind.TRANSIENT),  # serialization_failure
    ("40P01", FailureKind.TRANSIENT),  # deadlock_detected
    ("57014", FailureKind.TRANSIENT),  # query_canceled: statement_timeout (class 57, but not 57P)
    ("55P03", FailureKind.TRANSIENT),  # lock_not_available
    ("22021", FailureKind.POISON),   # character_not_in_repertoire (NUL)
    ("22P05", FailureKind.POISON),   # untranslatable_character (\\u0000 in jsonb)
    ("22001", FailureKind.POISON),   # string_data_right_truncation
    ("23505", FailureKind.POISON),   # unique_violation
    ("42P01", FailureKind.POISON),   # undefined_table: a bug, not an outage
    ("XX000", FailureKind.POISON),   # internal_error
])
def test_postgresql_errors_are_classified_by_sqlstate(sqlstate, kind):
    assert failure_kind(_wrapped(_pg(sqlstate), DataError)) is kind
    assert failure_kind(_pg(sqlstate)) is kind


def test_a_lost_connection_without_sqlstate_is_an_outage():
    assert failure_kind(_wrapped(psycopg.OperationalError("server closed the connection unexpectedly"))) is FailureKind.OUTAGE
    assert failure_kind(InterfaceError("connection already closed")) is FailureKind.OUTAGE


@pytest.mark.parametrize("error, kind", [
    (KafkaConnectionError(), FailureKind.OUTAGE),
    (KafkaTimeoutError(), FailureKind.OUTAGE),
    (NotLeaderForPartitionError(), FailureKind.OUTAGE),
    (UnknownTopicOrPartitionError(), FailureKind.OUTAGE),  # a broker that came back empty
    (UnknownProducerIdError(), FailureKind.OUTAGE),
    (MessageSizeTooLargeError(), FailureKind.POISON),  # about one record
])
def test_broker_errors_are_outages_unless_about_one_record(error, kind):
    assert failure_kind(error) is kind
    try:
        raise PublishFailed("wrapped") from error
    except PublishFailed as wrapped:
        assert failure_kind(wrapped) is kind


@pytest.mark.parametrize("error", [
    UnicodeEncodeError("latin-1", "用", 0, 1, "ordinal not in range"),
    ValueError("bad"), KeyError("x"), TypeError("y"), RecursionError(),
])
def test_anything_else_is_the_records_fault(error):
    assert failure_kind(error) is FailureKind.POISON


def test_sqlite_locked_is_transient():
    assert failure_kind(_wrapped(sqlite3.OperationalError("database is locked"))) is FailureKind.TRANSIENT


def test_safe_text_makes_anything_storable():
    assert safe_text("a\x00b") == "a\ufffdb"
    assert safe_text("x\ud800y") == "x?y"
    assert safe_text("é" * 300, 128) == "é" * 128
    assert safe_text(12) == "12"
    "".join(safe_text("\ud83d\x00")).encode("utf-8")  # encodes without error


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets():
    backoff = Backoff(first=1, cap=4)
    delays = [backoff.next() for _ in range(5)]
    for delay, nominal in zip(delays, [1, 2, 4, 4, 4]):
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    backoff.reset()
    assert 0.8 <= backoff.next() <= 1.2


def test_backoff_delay_grows_by_its_factor_and_stops_at_its_cap():
    class Middle:  # no jitter: the middle of the +-20 % band
        @staticmethod
        def uniform(low, high):
            return (low + high) / 2

    assert [backoff_delay(attempt=n, first=1.0, factor=3.0, rng=Middle) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]
    assert backoff_delay(attempt=10, first=0.5, cap=15.0, rng=Middle) == 15.0
