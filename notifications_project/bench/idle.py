"""idle: what the whole stack costs when nothing happens, and what the first notification after a
quiet spell waits.

The stack is the one production runs: the broker (the development broker here), run_worker and
run_dispatcher (each relaying the outbox), and the API under gunicorn. Some traffic first, then
`quiet` seconds without any, then each process's CPU (user + system, its children included: the
gunicorn workers) over `measure` seconds, from /proc. Then, after a quiet minute in all, one
notification: API answered -> inbox row, next to the same figure for notifications sent while the
stack is busy (the same run).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import urllib3

from inbox.models import Notification
from notifications_project.bench.fanout import bench_token
from notifications_project.bench.harness import BenchEnvironment, Result, wait_for
from notifications_project.bench.serving import _percentile, gunicorn

logger = logging.getLogger("bench")

TARGET_PERCENT = 3.0  # issue 13: the whole stack idle, of one core
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its live descendants (and of those it waited for)."""
    total = 0.0
    for each in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        total += (utime + stime + cutime + cstime) / CLOCK_TICKS
    return total


def _descendants(pid: int) -> list[int]:
    result, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        result += children
        todo += children
    return result


def run(env: BenchEnvironment, *, quiet: float, measure: float, before_first: float) -> list[Result]:
    processes = {
        "broker": env.dev_broker.process.pid if env.dev_broker else None,
        "worker": env.processes.start("run_worker").pid,
        "dispatcher": env.processes.start("run_dispatcher").pid,
    }
    api = gunicorn(env, workers=2)
    processes["api"] = env.processes.processes[-1][1].pid
    processes = {name: pid for name, pid in processes.items() if pid}
    token = bench_token()
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    http = urllib3.PoolManager(maxsize=2)

    def send(message: str) -> tuple[str, float]:
        response = http.request("POST", f"{api}/api/v1/notifications/", headers=headers,
                                body=b'{"sender":"bench","recipient":"idle-user","kind":"like","message":"%s"}' % message.encode())
        if response.status != 202:
            raise SystemExit(f"bench: the API answered {response.status}: {response.data[:200]!r}")
        return response.json()["id"], time.time()

    def latency_ms(notification_id: str, answered: float) -> float:
        row = wait_for(lambda: Notification.objects.filter(notification_id=notification_id).first(), timeout=60,
                       interval=0.002, what=f"notification {notification_id} in the inbox")
        return (row.delivered_at.timestamp() - answered) * 1000

    latency_ms(*send("warm-up"))  # the groups joined, the relay publishing
    busy = []
    for i in range(50):  # traffic: 10/s for 5 s
        busy.append(latency_ms(*send(f"busy {i}")))
        time.sleep(0.1)  # the send schedule, not a wait for an effect
    logger.info("idle: traffic sent (p50 %.1f ms); %.0f s quiet, then CPU over %.0f s", _percentile(busy, 0.5), quiet,
                measure)
    time.sleep(quiet)  # the quiet spell being measured: nothing to wait for
    start = {name: cpu_seconds(pid) for name, pid in processes.items()}
    began = time.monotonic()
    time.sleep(measure)
    elapsed = time.monotonic() - began
    percent = {name: (cpu_seconds(pid) - start[name]) / elapsed * 100 for name, pid in processes.items()}
    time.sleep(before_first)
    first = latency_ms(*send("after a quiet spell"))
    quiet_total = quiet + elapsed + before_first
    logger.info("idle: %s; first notification after %.0f s quiet: %.1f ms", ", ".join(
        f"{name} {value:.2f} %" for name, value in percent.items()), quiet_total, first)

    total = sum(percent.values())
    results = [Result(name=f"idle CPU {name}", figure=round(value, 2), unit="% of a core",
                      note=f"over {elapsed:.0f} s after {quiet:.0f} s without traffic")
               for name, value in percent.items()]
    results.append(Result(name="idle CPU whole stack", figure=round(total, 2), unit="% of a core",
                          ceiling=TARGET_PERCENT, ceiling_source="issue 13 target",
                          note=f"target <= {TARGET_PERCENT:g} % ({', '.join(processes)}; api: gunicorn, 2 workers)"))
    results.append(Result(name="first notification after quiet -> row", figure=round(first, 1), unit="ms",
                          ceiling=round(_percentile(busy, 0.5), 1), ceiling_source="p50 of 50 sent at 10/s, same run",
                          note=f"after {quiet_total:.0f} s without traffic; busy p50 {_percentile(busy, 0.5):.1f} ms"))
    return results
