import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.pipeline
def test_fanout_benchmark_runs_in_quick_mode(db, tmp_path):
    settings_dict = connection.settings_dict
    database_url = (
        f"postgres://{settings_dict['USER']}:{settings_dict['PASSWORD']}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", "fanout", "--quick", "--json", str(tmp_path / "results.json")],
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    throughput = results[0]
    assert throughput["unit"] == "recipients/s" and throughput["figure"] > 0
    assert throughput["ceiling"] and throughput["ratio"] == round(throughput["figure"] / throughput["ceiling"], 3)
    assert {r["unit"] for r in results[1:]} == {"MB"}
