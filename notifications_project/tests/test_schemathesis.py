"""schemathesis against /api/schema/, in process (WSGI): no input answers 5xx, every answer matches the schema."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from schemathesis.engine import events, from_schema

from inbox.authentication import recipient_token_issue
from notifications_project.wsgi import application

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")
# Examples per operation and phase (fuzzing); more find more, slower. 100: about a minute and a half.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "100"))
SEED = 20261121
BASE_DIR = Path(__file__).resolve().parents[2]


def _failures(stream) -> tuple[list[str], int, int]:
    failures, cases, operations = [], 0, set()
    for event in stream:
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            recorder = event.recorder
            cases += len(recorder.cases)
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.failure_info is not None:
                        case = recorder.cases[case_id].value
                        interaction = recorder.interactions.get(case_id)
                        status = interaction.response.status_code if interaction and interaction.response else None
                        failures.append(f"{check.name}: {case.method} {case.formatted_path} -> {status}: "
                                        f"{check.failure_info.failure.title}\n    {case.as_curl_command()[:600]}")
            operations.add(recorder.label)
        elif isinstance(event, events.NonFatalError):
            failures.append(f"error in {event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            break
    return failures, len(operations), cases


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("caller", "max_examples"), [("service", MAX_EXAMPLES), ("recipient", max(MAX_EXAMPLES // 4, 1))])
def test_no_input_answers_5xx_and_every_answer_matches_the_schema(caplog, caller, max_examples):
    """With a service token (everything), then with a recipient token (its inbox; 403 and 404 elsewhere)."""
    caplog.set_level(logging.ERROR, logger="django.request")  # thousands of 4xx lines otherwise
    user = get_user_model().objects.create(username="schemathesis")
    service_token = Token.objects.create(user=user).key
    recipient_token, _ = recipient_token_issue(recipient_id="0")
    authorization = f"Token {service_token}" if caller == "service" else f"Bearer {recipient_token}"
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "headers": {"Authorization": authorization},
        "workers": 1,
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "generation": {"max-examples": max_examples, "database": "none"},  # the same cases every run
        "phases": {"stateful": {"enabled": False}},
        "cache": {"enabled": False},  # no state kept between runs
    })
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=config,
                                            headers={"Authorization": f"Token {service_token}"})
    started = time.monotonic()
    failures, operations, cases = _failures(from_schema(schema).execute())
    elapsed = time.monotonic() - started
    print(f"schemathesis ({caller}): {operations} operations, {cases} cases, {elapsed:.0f} s, {len(failures)} failures")

    assert operations == len(list(schema.get_all_operations()))
    assert not failures, "\n".join(failures[:80])


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
                             "--format", "openapi-json", "--file", str(tmp_path / "schema.json")],
                            cwd=BASE_DIR, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema["components"]["securitySchemes"]["recipientToken"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["recipientToken"]["description"]}
    operations = [(method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) == 46  # 41, the frequency caps (list, create, retrieve, destroy), DELETE a notification
    for method, path, op in operations:
        codes = set(op["responses"])
        assert {"400", "401", "403", "406", "429"} <= codes, (method, path, codes)
        assert "{" not in path or "404" in codes, (method, path, codes)
        uses_recipient_token = {"recipientToken": []} in op["security"]
        inbox = "{recipient_id}/notifications/" in path or path.endswith("/preferences/") or path.startswith("/notifications/")
        assert uses_recipient_token == inbox, (method, path)
    assert "422" in schema["paths"]["/api/v1/notifications/"]["post"]["responses"]
    assert "409" in schema["paths"]["/api/v1/campaigns/{id}/cancel/"]["post"]["responses"]
    assert {"204", "404", "409"} <= set(schema["paths"]["/api/v1/notifications/{notification_id}/"]["delete"]["responses"])


@pytest.mark.django_db
def test_an_accept_header_we_cannot_answer_is_the_documented_406(service_client):
    response = service_client.get("/api/v1/campaigns/", HTTP_ACCEPT="application/xml")

    assert response.status_code == 406
