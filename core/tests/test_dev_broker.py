"""The development broker stops with its command, whichever signal stops the command."""

import signal
import subprocess
import sys

import pytest

from conftest import wait_until
from core.devbroker import free_port, port_open
from core.processes import BASE_DIR


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_dev_broker_stops_the_broker_on(sig, tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(BASE_DIR / "manage.py"), "dev_broker", "--port", str(port)],
                               cwd=BASE_DIR, stdout=open(tmp_path / "broker.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=20, what="the broker listening")
        process.send_signal(sig)
        assert process.wait(timeout=20) == 0
        wait_until(lambda: not port_open("127.0.0.1", port), timeout=10, what="the broker gone")
    finally:
        if process.poll() is None:
            process.kill()
