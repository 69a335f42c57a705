"""Production settings from the environment, and login throttling for the admin and the browsable API."""

import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from conftest import wait_until

BASE_DIR = Path(__file__).resolve().parents[2]


def _compose_environment(service: str) -> dict[str, str]:
    """A compose service's environment as `docker compose` would give it with nothing else set
    (`${NAME:-default}` is its default; SECRET_KEY, which compose requires, a fresh one)."""
    environment = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"][service]["environment"]
    given = {"SECRET_KEY": secrets.token_urlsafe(40), "METRICS_TOKEN": ""}

    def substitute(value: str) -> str:
        return re.sub(r"\$\{(\w+)(?::?[-?]([^}]*))?\}", lambda m: given.get(m.group(1), m.group(2) or ""), str(value))

    return {name: substitute(value) for name, value in environment.items()}


def test_the_production_settings_of_docker_compose_pass_check_deploy():
    environment = _compose_environment("api")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=BASE_DIR,
                            env={"PATH": os.environ["PATH"], "ENV_FILE": "/dev/null", **environment},
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout
    assert environment["SECURE_SSL_REDIRECT"] == "true" and environment["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto"


def test_development_defaults_still_warn_check_deploy():
    """The check is not silenced wholesale: without the production values it reports them."""
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=BASE_DIR,
                            env={"PATH": os.environ["PATH"], "ENV_FILE": "/dev/null", "SECRET_KEY": secrets.token_urlsafe(40)},
                            capture_output=True, text=True, timeout=60)

    for code in ("W004", "W008", "W012", "W016"):
        assert f"security.{code}" in result.stdout + result.stderr


@pytest.mark.django_db
def test_production_settings_redirect_to_https_and_trust_the_proxy_header(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()

    plain = client.get("/api/v1/notifications/")
    behind_proxy = client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")

    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert client.get("/healthz").status_code == 200  # probes inside the network are not redirected
    assert client.get("/readyz").status_code == 200
    assert behind_proxy.status_code == 200 and behind_proxy["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


LOGINS = [("/admin/login/?next=/admin/", "/admin/"), ("/api-auth/login/", "/accounts/profile/")]


@pytest.mark.django_db
@pytest.mark.parametrize(("login_url", "after_login"), LOGINS, ids=["admin", "browsable API"])
def test_after_too_many_wrong_passwords_the_right_one_is_refused_for_a_while(settings, login_url, after_login):
    settings.AXES_FAILURE_LIMIT = 5
    get_user_model().objects.create_user("admin", password="the-right-password-123", is_staff=True, is_superuser=True)
    client = Client()

    def login(password: str):
        return client.post(login_url, {"username": "admin", "password": password})

    assert login("nope").status_code == 200  # the form again, with an error
    for _ in range(3):
        login("nope")
    assert login("nope").status_code == 429  # the fifth
    locked = login("the-right-password-123")
    from_elsewhere = Client(REMOTE_ADDR="198.51.100.7").post(login_url, {"username": "admin", "password": "the-right-password-123"})

    assert locked.status_code == 429 and "_auth_user_id" not in client.session
    assert from_elsewhere.status_code == 429  # locked per username, not per address

    # Every attempt during the lockout starts it again; after a quiet cool-off the right password works.
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    last_attempt = AccessAttempt.objects.order_by("-attempt_time").first().attempt_time
    wait_until(lambda: timezone.now() - last_attempt > timedelta(seconds=1.1), what="a quiet cool-off")
    assert login("the-right-password-123").status_code == 302
    assert "_auth_user_id" in client.session


@pytest.mark.django_db
def test_a_right_password_resets_the_count(settings):
    settings.AXES_FAILURE_LIMIT = 3
    get_user_model().objects.create_user("staff", password="the-right-password-123", is_staff=True)
    client = Client()

    for _ in range(2):
        client.post("/admin/login/", {"username": "staff", "password": "nope"})
    assert client.post("/admin/login/", {"username": "staff", "password": "the-right-password-123"}).status_code == 302
    client.logout()
    for _ in range(2):
        client.post("/admin/login/", {"username": "staff", "password": "nope"})

    assert client.post("/admin/login/", {"username": "staff", "password": "the-right-password-123"}).status_code == 302
