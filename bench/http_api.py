"""HTTP enqueue throughput: ``conveyor api`` as a process, driven by wrk on loopback.

The API loads the bench's ``noop`` task (``CONVEYOR_TASKS=conveyor.tasks.builtin,bench.tasks``)
so it validates the same jobs the workers run. Skipped, with the reason, when ``conveyor api``
or wrk is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import REPO
from conveyor.embedded import free_port

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


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _find(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return found.group(1)


def wrk(scenario: HttpScenario, port: int, duration_s: float) -> dict[str, float]:
    command = [
        "wrk", f"-t{scenario.threads}", f"-c{scenario.connections}", f"-d{duration_s:g}s",
        "--latency", "-s", str(HERE / scenario.script),
        f"http://127.0.0.1:{port}{scenario.path}",
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{scenario.key}: {bad.group(1)} requests were refused")
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    return {
        "jobs_per_s": rps * scenario.jobs_per_request,
        "p50_ms": _ms(_find(r"(?m)^\s+50%\s+(\S+)", out)),
        "p99_ms": _ms(_find(r"(?m)^\s+99%\s+(\S+)", out)),
    }
