import os
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from core.testing import manage_check

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE = BASE_DIR / "docker-compose.yml"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", None),
        ("SECRET_KEY", "short"),
        ("DEBUG", "maybe"),
        ("KAFKA_PARTITIONS", "twelve"),
        ("KAFKA_PARTITIONS", "0"),
        ("DATABASE_URL", "nonsense://"),
        ("WORKER_BATCH_SIZE", "-5"),
        ("CLOCK_OFFSET_SECONDS", "3600"),  # without DEBUG: found from outside, it moved every worker's times
        ("EMAIL_TIMEOUT", "0"),
    ],
)
def test_a_missing_or_malformed_setting_stops_with_one_line_naming_it(variable, value):
    result = manage_check(**{variable: value})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


def test_valid_settings_pass_the_check():
    result = manage_check(SECRET_KEY="a-long-enough-secret-key", DEBUG="true")

    assert result.returncode == 0, result.stderr


def test_a_moved_clock_is_accepted_with_debug_only():
    assert manage_check(SECRET_KEY="a-long-enough-secret-key", DEBUG="true", CLOCK_OFFSET_SECONDS="60").returncode == 0


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_kafka_in_kraft_mode_postgres_16_and_the_design_processes():
    services = _compose()["services"]

    assert {"kafka", "postgres", "api", "stream", "dispatcher", "worker"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"] == "postgres:16"
    assert "gunicorn" in services["api"]["command"]
    assert "uvicorn" in services["stream"]["command"]
    for name, command in [("dispatcher", "run_dispatcher"), ("worker", "run_worker")]:
        assert command in services[name]["command"]
    # The design's processes are the whole system: the outbox relay runs inside the dispatcher and the worker.
    assert "relay" not in services
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("name", ["kafka", "postgres", "api", "stream", "dispatcher", "worker"])
def test_every_long_running_compose_service_has_a_healthcheck(name):
    healthcheck = _compose()["services"][name]["healthcheck"]

    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}
    assert healthcheck["interval"]


@pytest.mark.parametrize("name", ["migrate", "api", "stream", "dispatcher", "worker"])
def test_backend_services_are_configured_for_the_stack(name):
    service = _compose()["services"][name]
    environment = service["environment"]

    assert environment["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "SECRET_KEY" in environment
    manage_commands = [arg for arg in " ".join(service["command"]).split() if arg.startswith(("run_", "migrate", "create_"))]
    assert all(c in get_commands() for c in manage_commands), manage_commands


def test_docker_compose_validates_the_file():
    binary = "/usr/bin/docker-compose"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs Debian's package")
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        env={**os.environ, "SECRET_KEY": "x" * 40},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
