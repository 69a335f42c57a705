#!/usr/bin/env python
import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
VENV_PYTHON = BASE_DIR / ".venv" / "bin" / "python"


def _in_venv_or_elsewhere() -> None:
    """`python manage.py …` works without activating .venv: outside any virtualenv, with the project's
    .venv present, run again under its Python (scripts/manage does the same and creates it if missing)."""
    outside_any_venv = sys.prefix == sys.base_prefix
    if outside_any_venv and VENV_PYTHON.exists() and not os.environ.get("MANAGE_NO_VENV"):
        os.environ["MANAGE_NO_VENV"] = "1"  # once: never loops
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])


def main():
    _in_venv_or_elsewhere()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications_project.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except Exception as exc:
        from notifications_project.startup import explain

        message = explain(exc)
        if message is None or os.environ.get("MANAGE_TRACEBACK"):
            raise
        sys.exit(f"{sys.argv[1] if len(sys.argv) > 1 else 'manage.py'}: {message}")


if __name__ == "__main__":
    main()
