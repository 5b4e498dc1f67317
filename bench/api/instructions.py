"""Instructions per ``POST /enqueue`` of the API servers, counted by valgrind's callgrind.

    .venv/bin/python bench/api/instructions.py --baseline /work/wt/base
    .venv/bin/python bench/api/instructions.py --baseline /work/wt/base --sides default,node \
        --requests 3000 --rounds 3

CPU time per request moves by ±30% on this shared 2-core machine with the load of whatever
else runs; an instruction count does not. Each side's server (``conveyor api`` from this
checkout, or from the baseline's with ``base:``; ``node``: the seed's express + BullMQ API)
runs under ``valgrind --tool=callgrind`` against a private redis-server (not under valgrind),
gets ``--warmup`` requests, has its counters zeroed (``callgrind_control --zero``), then
``--requests`` single-job POSTs one at a time on one keep-alive connection (the 1-connection
scenario), and its counters are dumped: instructions / requests. Counted: the server's user
space (interpreter, uvloop, httptools, hiredis, pydantic-core; V8 and its JIT code for
Node.js). Not counted: the kernel's share (socket reads and writes, about a fifth of the
API's CPU time), Redis, the client. The server runs some 50x slower under valgrind, so
anything it does per second (timers, the keep-alive check) weighs more than it would at full
speed. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.api.run import VARIANTS, stop_server  # noqa: E402

from conveyor.embedded import RedisServer  # noqa: E402
from conveyor.ports import free_port  # noqa: E402

BODY = b'{"name": "simulate", "data": {"duration_ms": 0}}'


def start(
    side: str, baseline: Path, redis_url: str, port: int, out: Path
) -> subprocess.Popen[bytes]:
    checkout, _, name = side.rpartition(":")
    variant = VARIANTS[name]
    root = baseline if checkout == "base" else REPO
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_QUEUE": "bench",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        **variant.env,
    }
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p"]
    if variant.node:
        env.update({"PORT": str(port), "REDIS_URL": redis_url, "QUEUE": "bench"})
        cmd = [*valgrind, "--smc-check=all", "node", str(HERE / "node" / "server.js")]
    else:
        if env.get("CONVEYOR_API_WORKERS", "1") != "1":
            raise SystemExit(f"{side}: one process only (callgrind follows one process)")
        python = str(root / ".venv" / "bin" / "python")
        cmd = [*valgrind, python, "-m", "conveyor.cli", "api"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, cwd=root, stderr=subprocess.DEVNULL
    )


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready in time")


def post(conn: http.client.HTTPConnection, count: int) -> None:
    headers = {"Content-Type": "application/json"}
    for _ in range(count):
        conn.request("POST", "/enqueue", body=BODY, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"POST /enqueue answered {response.status}")


def callgrind(command: str, pid: int) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


def counted(pid: int, out: Path, keep: Path | None, side: str) -> int:
    """Instructions since the last zeroing (callgrind dumps them to a new file; a copy goes
    to ``keep``, for callgrind_annotate)."""
    callgrind("--dump", pid)
    newest = max(out.glob(f"callgrind.{pid}.*"), key=lambda f: f.stat().st_mtime_ns)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(newest, keep / f"{side.replace(':', '-')}.{newest.name}")
    for line in newest.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {newest}")


def measure(side: str, args: argparse.Namespace, redis_url: str, out: Path) -> float:
    port = free_port()
    proc = start(side, args.baseline, redis_url, port, out)
    try:
        wait_ready(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        post(conn, args.warmup)
        callgrind("--zero", proc.pid)
        post(conn, args.requests)
        instructions = counted(proc.pid, out, args.keep, side)
        conn.close()
    finally:
        stop_server(proc)
    return instructions / args.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--sides", default="base:default,default,node")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep callgrind's files here")
    args = parser.parse_args()
    sides = args.sides.split(",")
    figures: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            for round_no in range(args.rounds):
                for side in sides:
                    each = measure(side, args, redis.url, Path(tmp))
                    figures[side].append(each)
                    print(f"[{round_no + 1}/{args.rounds}] {side:16} {each:12,.0f} instr/req")
        finally:
            redis.stop()
    first = sides[0]
    print(f"\n| side | instructions per request | x {first} |")
    print("| --- | ---: | ---: |")
    for side in sides:
        mine, theirs = statistics.median(figures[side]), statistics.median(figures[first])
        print(f"| {side} | {mine:,.0f} | {mine / theirs:.2f}x |")


if __name__ == "__main__":
    main()
