"""Benchmark ``conveyor api`` with wrk on loopback; prints a Markdown table and writes JSON.

    .venv/bin/python bench/api/run.py                      # the figures in docs/benchmarks.md
    .venv/bin/python bench/api/run.py --variants batched,naive --duration 10 --repeats 3

Each variant is a server configuration (environment and command). For every repeat, every
variant is started afresh against a private redis-server (AOF on, appendfsync everysec, as
the embedded one), warmed up, measured with wrk (single enqueue at 1 and 50 connections, bulk
enqueue of 100 jobs per request) and stopped; repeats interleave variants so that a busy
machine slows them alike. Figures are medians over the repeats. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "src"))

import psutil  # noqa: E402

from conveyor.embedded import RedisServer  # noqa: E402
from conveyor.ports import free_port  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python")
CONVEYOR = str(REPO / ".venv" / "bin" / "conveyor")
BULK_SIZE = 100


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)
    uvicorn_args: tuple[str, ...] = ()  # run through the uvicorn CLI instead of conveyor api
    node: bool = False  # the seed's own stack (bench/api/node/server.js)


VARIANTS = {
    v.name: v
    for v in [
        Variant("default", "conveyor api as shipped (fast path, batching, uvloop)"),
        Variant(
            "no-fast-path",
            "POST /enqueue through FastAPI's routing (batching, uvloop)",
            {"CONVEYOR_API_FAST_PATH": "false"},
        ),
        Variant(
            "no-batch",
            "fast path, one Redis round trip per job (no per-tick pipeline)",
            {"CONVEYOR_API_BATCH_ENQUEUE": "false"},
        ),
        Variant(
            "naive",
            "FastAPI route, one round trip per job: the straightforward port",
            {"CONVEYOR_API_FAST_PATH": "false", "CONVEYOR_API_BATCH_ENQUEUE": "false"},
        ),
        Variant(
            "asyncio-loop",
            "as default, but the stdlib asyncio loop instead of uvloop",
            uvicorn_args=("--loop", "asyncio"),
        ),
        Variant("workers-2", "as default, two server processes", {"CONVEYOR_API_WORKERS": "2"}),
        Variant("node", "the seed's stack: Node.js express + BullMQ, one process", node=True),
        Variant(
            "node-2",
            "the seed's stack, two processes (node:cluster)",
            {"WORKERS": "2"},
            node=True,
        ),
    ]
}


@dataclass
class Scenario:
    name: str
    script: str
    path: str
    threads: int
    connections: int
    jobs_per_request: int = 1


SCENARIOS = [
    Scenario("single c=1", "enqueue.lua", "/enqueue", 1, 1),
    Scenario("single c=50", "enqueue.lua", "/enqueue", 2, 50),
    Scenario("bulk(100) c=8", "bulk.lua", "/enqueue/bulk", 2, 8, BULK_SIZE),
]

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _find(pattern: str, output: str) -> str:
    found = re.search(pattern, output)
    if found is None:
        raise ValueError(f"wrk output without {pattern!r}:\n{output}")
    return found.group(1)


def parse_wrk(output: str) -> dict[str, float]:
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        "p50_ms": _ms(_find(r"(?m)^\s+50%\s+(\S+)", output)),
        "p99_ms": _ms(_find(r"(?m)^\s+99%\s+(\S+)", output)),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if sock else 0.0,
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    except psutil.NoSuchProcess:
        pass
    return total


def wrk(scenario: Scenario, port: int, duration: float, pid: int) -> dict[str, float]:
    cmd = [
        "wrk",
        f"-t{scenario.threads}",
        f"-c{scenario.connections}",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(HERE / scenario.script),
        f"http://127.0.0.1:{port}{scenario.path}",
    ]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pid) - cpu_before
    result = parse_wrk(out)
    result["jobs_per_s"] = result["rps"] * scenario.jobs_per_request
    requests = float(_find(r"(\d+) requests in", out))
    result["server_cpu_us_per_request"] = cpu / requests * 1e6 if requests else 0.0
    return result


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def start_server(variant: Variant, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_QUEUE": "bench",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        **variant.env,
    }
    if variant.node:
        env.update({"PORT": str(port), "REDIS_URL": redis_url, "QUEUE": "bench"})
        cmd = ["node", str(HERE / "node" / "server.js")]
    elif variant.uvicorn_args:
        cmd = [
            PYTHON, "-m", "uvicorn", "--factory",
            "conveyor.services.api.server:app_from_environment",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning", *variant.uvicorn_args,
        ]  # fmt: skip
    else:
        cmd = [CONVEYOR, "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    _wait_ready(port, proc)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flush(redis_url: str) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    subprocess.run(["redis-cli", "-p", port, "FLUSHALL"], check=True, capture_output=True)


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version.split(" v=")[1].split()[0] if " v=" in redis_version else "?",
        "wrk": wrk_version.split()[1] if wrk_version else "?",
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node")
        else "-",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="default,no-fast-path,no-batch,naive,workers-2")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    variants = [VARIANTS[name] for name in args.variants.split(",")]
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    info = machine()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        v.name: {s.name: [] for s in scenarios} for v in variants
    }
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            for repeat in range(args.repeats):
                for variant in variants:
                    port = free_port()
                    proc = start_server(variant, redis.url, port)
                    try:
                        wrk(scenarios[0], port, args.warmup, proc.pid)
                        for scenario in scenarios:
                            if variant.node and scenario.jobs_per_request > 1:
                                continue  # the seed has no bulk endpoint
                            flush(redis.url)
                            result = wrk(scenario, port, args.duration, proc.pid)
                            runs[variant.name][scenario.name].append(result)
                            print(
                                f"[{repeat + 1}/{args.repeats}] {variant.name:13} "
                                f"{scenario.name:14} {result['rps']:8.0f} req/s "
                                f"{result['jobs_per_s']:8.0f} jobs/s p50 {result['p50_ms']:6.2f} "
                                f"p99 {result['p99_ms']:6.2f} ms "
                                f"cpu {result['server_cpu_us_per_request']:5.0f} us/req "
                                f"non-2xx {result['non_2xx']:.0f}",
                                flush=True,
                            )
                    finally:
                        stop_server(proc)
        finally:
            redis.stop()
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    medians = {
        v: {
            s: {k: statistics.median(r[k] for r in results) for k in results[0]}
            for s, results in per.items()
            if results
        }
        for v, per in runs.items()
    }
    args.out.write_text(json.dumps({"machine": info, "medians": medians, "runs": runs}, indent=1))
    print(f"\nmachine: {info}")
    print(f"wrk {args.duration:g} s per run, medians of {args.repeats}\n")
    print("| variant | scenario | requests/s | jobs/s | p50 ms | p99 ms | server CPU µs/req |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for v, per in medians.items():
        for s, m in per.items():
            print(
                f"| {v} | {s} | {m['rps']:.0f} | {m['jobs_per_s']:.0f} | "
                f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['server_cpu_us_per_request']:.0f} |"
            )


if __name__ == "__main__":
    main()
