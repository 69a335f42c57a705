"""The README's commands work as written: manage.py without activating .venv, issue_token keeping a
token in a file, and one line that says what to do for a database or a broker that is not there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from core.devbroker import free_port
from core.processes import BASE_DIR

SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


def _manage(*args: str, python: str = sys.executable, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "MANAGE_NO_VENV"}}
    environment["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # as a fresh shell, .venv not activated
    return subprocess.run([python, str(BASE_DIR / "manage.py"), *args], env={**environment, **(env or {})},
                          capture_output=True, text=True, timeout=120, cwd=BASE_DIR)


@pytest.mark.skipif(SYSTEM_PYTHON is None or Path(SYSTEM_PYTHON).resolve() == Path(sys.executable).resolve(),
                    reason="no system python3 apart from the virtualenv's")
def test_manage_py_runs_under_the_venv_without_activating_it():
    result = _manage("shell", "-c", "import sys; print(sys.prefix)", python=SYSTEM_PYTHON)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(BASE_DIR / ".venv")


def test_scripts_manage_runs_a_command():
    result = subprocess.run([str(BASE_DIR / "scripts" / "manage"), "check"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_a_database_that_does_not_exist_is_one_line_saying_what_to_do():
    result = _manage("migrate", env={"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/no_such_database_here"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'Database "no_such_database_here" does not exist' in lines[0]
    assert "createdb -h 127.0.0.1 -p 5432 -U postgres no_such_database_here" in lines[0]


def test_a_database_that_does_not_answer_is_one_line():
    result = _manage("migrate", env={"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/x"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "PostgreSQL does not answer" in result.stderr


def test_a_broker_that_cannot_be_reached_is_one_line(tmp_path):
    result = _manage("create_topics", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                                           "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no Kafka broker answers" in result.stderr and "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def _issue(name: str, key_file: Path) -> str:
    call_command("issue_token", name, "--key-file", str(key_file), stdout=open(os.devnull, "w"))
    return key_file.read_text().strip()


def test_issue_token_with_a_key_file_keeps_the_token_across_runs_and_databases(db, tmp_path):
    key_file = tmp_path / "run" / "demo-token"
    first = _issue("demo", key_file)
    assert _issue("demo", key_file) == first
    assert Token.objects.get(user__username="demo").key == first
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    Token.objects.all().delete()  # a new database
    assert _issue("demo", key_file) == first
    assert Token.objects.get(key=first).user.username == "demo"


def test_issue_token_without_a_key_file_still_rotates(db):
    call_command("issue_token", "app", stdout=open(os.devnull, "w"))
    before = Token.objects.get(user__username="app").key
    call_command("issue_token", "app", stdout=open(os.devnull, "w"))
    assert Token.objects.get(user__username="app").key != before


@pytest.mark.parametrize("content", ["", "not a token", "x" * 40 + "\x00", "é" * 40])
def test_issue_token_refuses_a_key_file_that_holds_no_token(db, tmp_path, content):
    key_file = tmp_path / "demo-token"
    key_file.write_text(content)
    if content == "":
        assert len(_issue("demo", key_file)) == 40  # empty: as if absent
        return
    with pytest.raises(CommandError, match="does not hold a token"):
        call_command("issue_token", "demo", "--key-file", str(key_file))
