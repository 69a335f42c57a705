"""api and latency: the HTTP side, through real servers (gunicorn, uvicorn) on loopback."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time

import urllib3

from core.devbroker import free_port, port_open
from core.sse_client import StreamReader
from inbox.models import Notification
from notifications_project.bench.fanout import bench_token
from notifications_project.bench.harness import BenchEnvironment, Result, wait_for

logger = logging.getLogger("bench")

# ../shared/notes/ceilings.md: one notification produce -> consumed -> row committed, fetch_max_wait_ms=5.
RAW_LATENCY_P99_MS = 7.0


def _serve(env: BenchEnvironment, argv: list[str], port: int, extra_env: dict | None = None) -> str:
    env.processes.start_program(argv[2] if argv[1] == "-m" else argv[0], argv, env=extra_env)
    wait_for(lambda: port_open("127.0.0.1", port), timeout=30, what=f"a server on port {port}")
    return f"http://127.0.0.1:{port}"


def gunicorn(env: BenchEnvironment, *, workers: int, extra_env: dict | None = None) -> str:
    port = free_port()
    return _serve(env, [sys.executable, "-m", "gunicorn", "notifications_project.wsgi", "--bind", f"127.0.0.1:{port}",
                        "--workers", str(workers), "--log-level", "warning"], port, extra_env)


def uvicorn(env: BenchEnvironment) -> str:
    port = free_port()
    return _serve(env, [sys.executable, "-m", "uvicorn", "notifications_project.asgi:application", "--port", str(port),
                        "--log-level", "warning"], port)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def run_latency(env: BenchEnvironment, *, rate: int, seconds: int) -> list[Result]:
    """User-to-user notifications at `rate`/s: API answered -> row written, and -> SSE event received."""
    env.processes.start("run_worker")  # it relays the outbox too
    api, stream_url = gunicorn(env, workers=2), uvicorn(env)
    token = bench_token()
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    http = urllib3.PoolManager(maxsize=4)
    stream = StreamReader(f"{stream_url}/api/v1/recipients/latency-user/notifications/stream/",
                          {"Authorization": f"Token {token}"})

    def send(message: str) -> tuple[str, float]:
        response = http.request("POST", f"{api}/api/v1/notifications/", headers=headers,
                                body=b'{"sender":"bench","recipient":"latency-user","kind":"like","message":"%s"}' % message.encode())
        answered = time.time()
        if response.status != 202:
            raise SystemExit(f"bench: the API answered {response.status}: {response.data[:200]!r}")
        return response.json()["id"], answered

    send("warm-up")  # the worker's group joins, the stream subscribes
    wait_for(lambda: len(stream.events) >= 1, timeout=60, what="the warm-up notification on the stream")
    logger.info("latency: %d notifications at %d/s", rate * seconds, rate)
    answered: dict[str, float] = {}
    started = time.perf_counter()
    for i in range(rate * seconds):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the send schedule, not a wait for an effect
        notification_id, at = send(f"n{i}")
        answered[notification_id] = at
    wait_for(lambda: len(stream.events) >= 1 + len(answered), timeout=60, what="every event on the stream")
    stream.close()

    received = {e["data"].split('"id":"')[1].split('"')[0]: at for e, at in zip(stream.events, stream.received_at)}
    delivered = dict(Notification.objects.filter(notification_id__in=answered).values_list("notification_id", "delivered_at"))
    to_row = [(delivered[n].timestamp() - answered[n]) * 1000 for n in answered]
    to_event = [(received[n] - answered[n]) * 1000 for n in answered]
    note = f"{len(answered)} notifications at {rate}/s; p50 {{:.1f}} ms"
    return [
        Result(name="latency p99 API answered -> row written", figure=round(_percentile(to_row, 0.99), 1), unit="ms",
               ceiling=RAW_LATENCY_P99_MS, ceiling_source="ceilings.md raw produce->row p99",
               note=note.format(_percentile(to_row, 0.5))),
        Result(name="latency p99 API answered -> SSE event", figure=round(_percentile(to_event, 0.99), 1), unit="ms",
               note=note.format(_percentile(to_event, 0.5))),
    ]


_WRK_POST_SCRIPT = """wrk.method = "POST"
wrk.body = '{"sender": "bench", "recipient": "api-user", "kind": "like", "message": "hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token %s"
"""
_WRK_GET_SCRIPT = """wrk.headers["Authorization"] = "Token %s"
"""


def _wrk(url: str, token: str, *, seconds: int, connections: int, method: str = "POST") -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx responses) from wrk."""
    if not shutil.which("wrk"):
        raise SystemExit("bench: the HTTP benchmarks need wrk (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write((_WRK_POST_SCRIPT if method == "POST" else _WRK_GET_SCRIPT) % token)
    output = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
                            capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", output).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, p99, int(errors.group(1)) if errors else 0


def _warm_up(urls: list[str], token: str, *, connections: int, method: str = "POST") -> None:
    """Until every url has answered a whole 1-second wrk run: gunicorn's port opens before its workers
    have imported Django, and on a loaded machine a first short run can complete no request at all."""
    deadline = time.monotonic() + 90
    for url in urls:
        while _wrk(url, token, seconds=1, connections=connections, method=method)[0] == 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {url} answered no request within 90 s; is the server starting?")


def _measured(url: str, token: str, *, seconds: int, connections: int, method: str = "POST") -> tuple[float, float, int]:
    """A wrk run that completed requests: a run with none measured a stall, not the endpoint (once more)."""
    for _ in range(3):
        result = _wrk(url, token, seconds=seconds, connections=connections, method=method)
        if result[0] > 0:
            return result
        logger.warning("%s completed no request in %d s; measuring again", url, seconds)
    raise SystemExit(f"bench: {url} completed no request in three {seconds}-s runs")


def _beside_bare(name: str, ours: tuple[float, float, int], bare: tuple[float, float, int], note: str) -> list[Result]:
    """Throughput with bare's as the ceiling (ratio: ours / bare), and p99 with bare's (ratio: ours / bare)."""
    (rate, p99, errors), (bare_rate, bare_p99, _) = ours, bare
    logger.info("%s: %.0f req/s, p99 %.1f ms, %d errors (bare DRF: %.0f req/s, p99 %.1f ms)", name, rate, p99, errors,
                bare_rate, bare_p99)
    return [
        Result(name=f"{name} throughput", figure=round(rate), unit="req/s", ceiling=round(bare_rate),
               ceiling_source="bare DRF endpoint, same server and run", note=f"{note}; {errors} non-2xx"),
        Result(name=f"{name} p99", figure=round(p99, 1), unit="ms", ceiling=round(bare_p99, 1),
               ceiling_source="bare DRF endpoint's p99, same run (ratio: ours / bare's)",
               note=f"bare DRF endpoint p99 {bare_p99:.1f} ms"),
    ]


def run_api(env: BenchEnvironment, *, seconds: int, connections: int, workers: int) -> list[Result]:
    """POST /api/v1/notifications/ under load from wrk, next to a bare DRF endpoint on the same server."""
    env.processes.start("run_relay")  # the outbox drains (a relay alone: no worker competes for the cores)
    api = gunicorn(env, workers=workers, extra_env={"BENCH_ENDPOINTS": "true", "THROTTLE_RATE_SERVICE": ""})
    token = bench_token()
    _warm_up([f"{api}/api/bench/bare/", f"{api}/api/v1/notifications/"], token, connections=connections)
    bare = _measured(f"{api}/api/bench/bare/", token, seconds=seconds, connections=connections)
    ours = _measured(f"{api}/api/v1/notifications/", token, seconds=seconds, connections=connections)
    note = f"gunicorn {workers} sync workers, wrk {connections} connections, {seconds} s"
    return _beside_bare("api POST /notifications/", ours, bare, note)


def run_inbox_http(env: BenchEnvironment, *, recipient: str, seconds: int, connections: int, workers: int) -> list[Result]:
    """The inbox reads a page load makes (the newest page, the badge's capped unread count) through
    gunicorn under wrk, each next to a bare DRF GET on the same server, measured just before it."""
    api = gunicorn(env, workers=workers, extra_env={"BENCH_ENDPOINTS": "true", "THROTTLE_RATE_SERVICE": ""})
    token = bench_token()
    base = f"{api}/api/v1/recipients/{recipient}/notifications/"
    note = f"gunicorn {workers} sync workers, wrk {connections} connections, {seconds} s"
    results = []
    for name, url in [("inbox GET newest page (50)", base), ("inbox GET unread count ?limit=99", f"{base}unread-count/?limit=99")]:
        _warm_up([f"{api}/api/bench/bare/", url], token, connections=connections, method="GET")
        bare = _measured(f"{api}/api/bench/bare/", token, seconds=seconds, connections=connections, method="GET")
        ours = _measured(url, token, seconds=seconds, connections=connections, method="GET")
        results += _beside_bare(name, ours, bare, note)
    return results
