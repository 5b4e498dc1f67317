"""HTTP enqueue throughput: ``conveyor api`` as a process, driven by wrk on loopback.

The API loads the bench's ``noop`` task (``CONVEYOR_TASKS=conveyor.tasks.builtin,bench.tasks``)
so it validates the same jobs the workers run. Skipped, with the reason, when ``conveyor api``
or wrk is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.api.run import parse_wrk
from bench.harness import REPO
from conveyor.ports import free_port

HERE = Path(__file__).resolve().parent / "http"
CONVEYOR = str(Path(sys.executable).parent / "conveyor")  # the venv running the bench


@dataclass(frozen=True)
class HttpScenario:
    key: str
    script: str
    path: str
    threads: int
    connections: int
    jobs_per_request: int


SCENARIOS = (
    HttpScenario("http single c=1", "enqueue.lua", "/enqueue", 1, 1, 1),
    HttpScenario("http single c=50", "enqueue.lua", "/enqueue", 2, 50, 1),
    HttpScenario("http bulk(100) c=8", "bulk.lua", "/enqueue/bulk", 2, 8, 100),
)


def unavailable() -> str | None:
    """Why the HTTP scenarios cannot run here, or None."""
    if not shutil.which("wrk"):
        return "wrk is not installed (apt-get install wrk)"
    if not Path(CONVEYOR).exists():
        return f"{CONVEYOR} not found"
    probe = subprocess.run([CONVEYOR, "api", "--help"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "`conveyor api` is not available"
    return None


@contextlib.contextmanager
def api_server(redis_url: str, queue: str) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_QUEUE": queue,
        "CONVEYOR_TASKS": "conveyor.tasks.builtin,bench.tasks",
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [CONVEYOR, "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"conveyor api exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("conveyor api did not become ready")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(scenario: HttpScenario, port: int, duration_s: float) -> dict[str, float]:
    command = [
        "wrk", f"-t{scenario.threads}", f"-c{scenario.connections}", f"-d{duration_s:g}s",
        "--latency", "-s", str(HERE / scenario.script),
        f"http://127.0.0.1:{port}{scenario.path}",
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    parsed = parse_wrk(out)
    if parsed["non_2xx"]:
        raise RuntimeError(f"{scenario.key}: {parsed['non_2xx']:g} requests were refused")
    return {
        "jobs_per_s": parsed["rps"] * scenario.jobs_per_request,
        "p50_ms": parsed["p50_ms"],
        "p99_ms": parsed["p99_ms"],
    }
