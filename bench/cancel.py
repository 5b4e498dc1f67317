"""How long a cancel takes to stop a running job: from just before ``QueueClient.cancel`` to
the job's ``finishedOn`` (written by the worker that failed it; same host, same clock).

    uv run python -m bench.cancel                      # 2 worker processes, 200 cancels
    uv run python -m bench.cancel --processes 3 --cancels 500

Starts a private redis-server (AOF, as the embedded one) and ``conveyor worker --processes N``
running the built-in ``simulate`` task; keeps the workers' slots full of 60 s jobs and cancels
running ones one at a time, from this process, as a user would. Prints the distribution
(median, p90, p99, max, ms). Not a test: the tests only check that each stop is under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import REPO, private_redis
from conveyor import JobSpec, JobState, QueueClient
from conveyor.redis import connect
from conveyor.testing import wait_for_state

QUEUE = "benchCancel"
PREFIX = "bench"
LONG_MS = 60_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(url: str, cancels: int, slots: int) -> list[float]:
    redis = connect(url)
    client = QueueClient(redis, queue=QUEUE, prefix=PREFIX, pipelined=False)
    active_key = f"{PREFIX}:{QUEUE}:active"
    await client.enqueue_many([JobSpec("simulate", {"duration_ms": LONG_MS})] * slots)
    stops: list[float] = []
    try:
        while len(stops) < cancels:
            running = await redis.lrange(active_key, 0, 0)
            if not running:
                await asyncio.sleep(0.005)
                continue
            job_id = str(running[0])
            asked_ms = time.time() * 1000
            result = await client.cancel(job_id, "bench", by="bench")
            if not result.stopping:
                continue
            view = await wait_for_state(client, job_id, JobState.FAILED, timeout=30)
            assert view.info.finished_on is not None
            stops.append(view.info.finished_on - asked_ms)
            await client.enqueue("simulate", {"duration_ms": LONG_MS})  # keep the slots full
    finally:
        await client.close()
        await redis.aclose()
    return stops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--cancels", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, private_redis("aof", Path(folder)) as server:
        url = server.url
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
            "PYTHONPATH": str(REPO),
            "CONVEYOR_REDIS_URL": url,
            "CONVEYOR_QUEUE": QUEUE,
            "CONVEYOR_PREFIX": PREFIX,
            "CONVEYOR_LOG_LEVEL": "WARNING",
        }
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "conveyor.cli", "worker"),
                *("--processes", str(args.processes), "--concurrency", str(args.concurrency)),
            ],
            env=env,
            cwd=folder,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            stops = asyncio.run(_measure(url, args.cancels, args.processes * args.concurrency))
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"cancels={len(stops)} processes={args.processes} concurrency={args.concurrency} "
        f"load={load}\n"
        f"stop ms: median={statistics.median(stops):.1f} p90={_percentile(stops, 0.9):.1f} "
        f"p99={_percentile(stops, 0.99):.1f} max={max(stops):.1f}"
    )


if __name__ == "__main__":
    main()
