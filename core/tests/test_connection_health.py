"""A persistent connection is checked at each request's start by looking at its socket, not with a
`SELECT 1` round trip; one the server closed is still found and replaced before the request uses it."""

import psycopg
import pytest
from django.core.signals import request_started
from django.db import connection

from conftest import wait_until
from core.db import connections_trust_idle
from core.testing import WireStatements

pytestmark = pytest.mark.django_db(transaction=True)


def _request_starts() -> None:
    # As in a server: Django's close_old_connections (connected when django.db is imported), then ours
    # (connected when the app is ready). Django's test client connects its handler again after each
    # request, behind ours: put ours back last.
    request_started.disconnect(dispatch_uid="core.connections_trust_idle")
    request_started.connect(connections_trust_idle, dispatch_uid="core.connections_trust_idle")
    request_started.send(sender=None)


def test_an_idle_healthy_connection_costs_no_round_trip():
    connection.close()  # a connection of its own: an earlier test's LISTEN would leave notifications to read
    connection.ensure_connection()

    with WireStatements(connection) as wire:
        _request_starts()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 42")

    assert wire.statements == ["SELECT 42"]  # no SELECT 1 before it


def test_a_connection_the_server_closed_is_replaced_before_the_request_uses_it():
    connection.ensure_connection()
    old_pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [old_pid])
        wait_until(lambda: not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [old_pid]).fetchone(),
                   what="the terminated backend gone")

    # The server's goodbye reaches the socket; then Django's own check runs and reconnects.
    _request_starts()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != old_pid
