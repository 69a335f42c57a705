import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]


def _bench(name: str, tmp_path, *options: str) -> list[dict]:
    settings_dict = connection.settings_dict
    database_url = (
        f"postgres://{settings_dict['USER']}:{settings_dict['PASSWORD']}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", name, "--quick", *options, "--json", str(tmp_path / "results.json")],
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


@pytest.mark.pipeline
def test_fanout_benchmark_runs_in_quick_mode(db, tmp_path):
    """With the Celery peer (--peer): it fails unless the peer wrote one row per recipient; with
    --templates (--rules), unless the templated campaign (the one with the rules on) reached every recipient."""
    *results, personal, translated, ruled, ruled_next, peer, versus = _bench("fanout", tmp_path, "--peer", "--templates",
                                                                              "--rules")
    throughput = results[0]
    assert throughput["unit"] == "recipients/s" and throughput["figure"] > 0
    assert throughput["ceiling"] and throughput["ratio"] == round(throughput["figure"] / throughput["ceiling"], 3)
    assert {r["unit"] for r in results[1:]} == {"MB"}, results
    for templated in (personal, translated):
        assert "with templates" in templated["name"] and templated["figure"] > 0
        assert templated["ceiling"] == throughput["figure"]
    for with_rules in (ruled, ruled_next):
        assert "rules on" in with_rules["name"] and with_rules["figure"] > 0
        assert with_rules["ceiling"] == throughput["figure"]
    assert peer["name"].startswith("peer: Celery") and peer["unit"] == "recipients/s" and peer["figure"] > 0
    assert (versus["figure"], versus["ceiling"]) == (throughput["figure"], peer["figure"])
    assert versus["ratio"] == round(throughput["figure"] / peer["figure"], 3)


@pytest.mark.pipeline
def test_inbox_benchmark_runs_in_quick_mode(db, tmp_path):
    if not shutil.which("wrk"):
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; .ci/run installs Debian's package")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    results = _bench("inbox", tmp_path)

    in_process, served = results[:6], results[6:]
    assert [r["name"] for r in in_process] == [
        "inbox p99 newest page (50)", "inbox p99 next page (cursor)", "inbox p99 unread count", "inbox p99 unread count (limit 99)",
        "inbox p99 mark one read",
        "inbox p99 unread page (50)",
    ]
    assert all(r["unit"] == "ms" and r["figure"] > 0 for r in in_process)
    assert in_process[0]["ceiling"] == 1.7 and in_process[2]["ceiling"] == 2.6  # django-notifications' p99
    assert [r["name"] for r in served] == [
        "inbox GET newest page (50) throughput", "inbox GET newest page (50) p99",
        "inbox GET unread count ?limit=99 throughput", "inbox GET unread count ?limit=99 p99",
    ]
    assert all(r["figure"] > 0 and r["ceiling"] and r["ratio"] for r in served)
    assert all("0 non-2xx" in r["note"] for r in served if r["unit"] == "req/s")


@pytest.mark.pipeline
def test_latency_benchmark_runs_in_quick_mode(db, tmp_path):
    to_row, to_event = _bench("latency", tmp_path)

    assert to_row["unit"] == to_event["unit"] == "ms"
    assert 0 < to_row["figure"] <= to_event["figure"] + 50  # the event follows the row's commit
    assert to_row["ceiling"] and to_row["ratio"]


@pytest.mark.pipeline
def test_api_benchmark_runs_in_quick_mode(db, tmp_path):
    if not shutil.which("wrk"):
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; .ci/run installs Debian's package")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    throughput, p99 = _bench("api", tmp_path)

    assert throughput["unit"] == "req/s" and throughput["figure"] > 0 and throughput["ceiling"] > 0
    assert "; 0 non-2xx" in throughput["note"]
    assert p99["unit"] == "ms"


@pytest.mark.pipeline
def test_idle_benchmark_runs_in_quick_mode(db, tmp_path):
    results = _bench("idle", tmp_path)
    by_name = {r["name"]: r for r in results}

    assert {"idle CPU worker", "idle CPU dispatcher", "idle CPU api", "idle CPU whole stack"} <= set(by_name)
    parts = [r["figure"] for name, r in by_name.items() if name.startswith("idle CPU ") and name != "idle CPU whole stack"]
    assert by_name["idle CPU whole stack"]["figure"] == pytest.approx(sum(parts), abs=0.05)
    assert by_name["idle CPU whole stack"]["ceiling"] == 3.0  # the target, as the ratio's denominator
    first = by_name["first notification after quiet -> row"]
    assert first["unit"] == "ms" and first["figure"] > 0 and first["ceiling"] > 0
