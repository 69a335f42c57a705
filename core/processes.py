"""The pipeline's long-running commands as real child processes (tests, benchmarks)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


class ProcessGroup:
    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[tuple[Path, subprocess.Popen]] = []

    def start(self, command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A management command (run_worker, run_relay, ...)."""
        return self.start_program(command, [sys.executable, str(BASE_DIR / "manage.py"), command, *args], env=env)

    def start_program(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        process = subprocess.Popen(
            argv,
            env={**self.env, **(env or {})},
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
            cwd=BASE_DIR,
        )
        self.processes.append((log_path, process))
        return process

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if process.poll() is None:
            process.send_signal(sig)
        return process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_of(self, process: subprocess.Popen) -> str:
        return next(path.read_text(errors="replace") for path, p in self.processes if p is process)

    def logs(self) -> str:
        return "\n".join(f"--- {path}\n{path.read_text(errors='replace')[-3000:]}" for path, _ in self.processes)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a live process (VmRSS now, VmHWM its peak), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0
