"""scripts/run-all.sh from the outside, as a newcomer runs it: started as a subprocess on ports of its
own, stopped with SIGTERM and with SIGINT (Ctrl-C), with a live stream open."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import urllib3

from core.devbroker import free_port, port_open
from core.processes import BASE_DIR

pytestmark = pytest.mark.pipeline

http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=10), retries=False)


class RunAll:
    def __init__(self, tmp_path: Path, ports: dict[str, int]):
        self.ports = ports
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}},
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['broker']}",
            "API_PORT": str(ports["api"]), "SEED_PORT": str(ports["seed"]), "STREAM_PORT": str(ports["stream"]),
            "RUN_DIR": str(tmp_path / "run"),
        }
        # A session of its own: the test can find (and, if it fails, end) everything the script started.
        self.process = subprocess.Popen(["bash", str(BASE_DIR / "scripts" / "run-all.sh")], env=env, cwd=BASE_DIR,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"run-all never printed {marker!r}:\n{self.text()[-3000:]}")
            time.sleep(0.1)

    def stop(self, sig: int) -> float:
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run-all still running 15 s after {sig!r}:\n{self.text()[-3000:]}")
        return time.monotonic() - started

    def anything_left(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill_everything(self):
        if self.anything_left():
            os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("api", "seed", "stream", "broker")}


def _open_stream(port: int, token: str):
    response = http.request("GET", f"http://127.0.0.1:{port}/api/v1/recipients/1/notifications/stream/",
                            headers={"Authorization": f"Token {token}"}, preload_content=False)
    assert response.status == 200
    assert b"retry:" in response.read1(64)  # the stream is open
    return response


def _run_once(tmp_path, ports, sig) -> tuple[str, str]:
    """Start, check what "Running" promises, stop with `sig`; the demo token and admin password printed."""
    run_all = RunAll(tmp_path, ports)
    try:
        run_all.wait_for("Running.", timeout=150)
        text = run_all.text()
        token = re.search(r"Token:\s+(\w+)", text).group(1)
        password = re.search(r"password: (\S+)", text).group(1)
        # The printed curl lines work at once: the API, the seeds' port and the stream server answer.
        sent = http.request("POST", f"http://127.0.0.1:{ports['api']}/send", headers={"Authorization": f"Token {token}"},
                            fields={"kind": "follow", "fromID": "2", "toID": "1", "message": "Tito started following you."},
                            encode_multipart=False)
        assert sent.status == 202, sent.data
        assert http.request("GET", f"http://127.0.0.1:{ports['seed']}/notifications/1",
                            headers={"Authorization": f"Token {token}"}).status == 200
        assert http.request("GET", f"http://127.0.0.1:{ports['api']}/api/v1/").status == 200
        stream = _open_stream(ports["stream"], token)  # an open stream must not hold the shutdown

        took = run_all.stop(sig)
        assert took < 10, f"stopping took {took:.1f} s"
        stream.release_conn()
        assert not run_all.anything_left(), "a process of run-all outlived it"
        for name, port in ports.items():
            assert not port_open("127.0.0.1", port), f"{name} port {port} still open"
        return token, password
    finally:
        run_all.kill_everything()


def test_run_all_prints_running_when_everything_answers_and_stops_on_sigterm_and_sigint(tmp_path, ports):
    first = _run_once(tmp_path, ports, signal.SIGTERM)
    second = _run_once(tmp_path, ports, signal.SIGINT)
    assert second == first  # the demo token and the admin password stay the same from run to run
    assert (tmp_path / "run" / "demo-token").read_text().strip() == first[0]


def test_run_all_says_in_one_line_that_a_port_is_in_use(tmp_path, ports):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["api"]))
        taken.listen()
        run_all = RunAll(tmp_path, ports)
        try:
            assert run_all.process.wait(timeout=120) == 1
        finally:
            run_all.kill_everything()
    run_all.reader.join(timeout=5)
    assert f"run-all: port {ports['api']} is already in use" in run_all.text()
    assert "Traceback" not in run_all.text()
