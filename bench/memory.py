"""Does a worker's memory stay flat? One ``conveyor worker`` process runs a million no-op jobs
while its resident set size (RSS, from /proc) is sampled every second.

    python -m bench.memory --jobs 1000000

A private redis-server (no persistence); the worker is ``conveyor worker --concurrency 10``
with its production hooks (logging at INFO to /dev/null, the monitor's stats). This process
keeps 20,000 to 40,000 jobs waiting (bulk enqueues of 1,000, ``removeOnComplete`` so Redis
stays small) until ``--jobs`` have been enqueued, and counts done = enqueued - waiting -
active. Prints the RSS curve (every 10% of the jobs) and writes ``bench/memory-results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import REPO, load_average, private_redis
from conveyor.client import JobSpec, QueueClient
from conveyor.redis import connect

QUEUE, PREFIX = "benchMemory", "bench"
BATCH = 1000
LOW, HIGH = 20_000, 40_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def run(jobs: int, url: str, worker: subprocess.Popen[bytes]) -> list[dict[str, float]]:
    redis = connect(url)
    client = QueueClient(redis, queue=QUEUE, prefix=PREFIX, pipelined=False)
    spec = JobSpec("noop", {}, {"removeOnComplete": True})
    wait_key, active_key = f"{PREFIX}:{QUEUE}:wait", f"{PREFIX}:{QUEUE}:active"
    enqueued, samples = 0, []
    started = time.monotonic()
    last = started - 1.0  # a first sample at once
    try:
        while True:
            waiting, active = await redis.llen(wait_key), await redis.llen(active_key)
            done = enqueued - waiting - active
            now = time.monotonic()
            if now - last >= 1.0 or done >= jobs:
                last = now
                samples.append(
                    {"t_s": round(now - started, 1), "done": done, "rss_mb": rss_mb(worker.pid)}
                )
                print(samples[-1], flush=True)
            if done >= jobs:
                return samples
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode})")
            if waiting < LOW and enqueued < jobs:
                while waiting < HIGH and enqueued < jobs:
                    count = min(BATCH, jobs - enqueued)
                    await client.enqueue_many([spec] * count)
                    enqueued += count
                    waiting += count
            else:
                await asyncio.sleep(0.05)
    finally:
        await client.close()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    load_before = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory") as folder,
        private_redis("plain", Path(folder) / "redis") as server,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            PYTHONPATH=str(REPO),
            CONVEYOR_REDIS_URL=server.url,
            CONVEYOR_QUEUE=QUEUE,
            CONVEYOR_PREFIX=PREFIX,
            CONVEYOR_TASKS="bench.tasks",
            CONVEYOR_DATA_DIR=str(Path(folder) / "data"),
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "worker", "--concurrency", "10"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(3)
            samples = asyncio.run(run(args.jobs, server.url, worker))
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
    total_s = samples[-1]["t_s"]
    print(f"\n{args.jobs:,} jobs in {total_s:.0f} s ({args.jobs / total_s:,.0f} jobs/s)")
    print("| jobs done | RSS MB |\n| ---: | ---: |")
    step = args.jobs // 10
    for mark in range(0, args.jobs + 1, step):
        sample = next((s for s in samples if s["done"] >= mark), samples[-1])
        print(f"| {sample['done']:,.0f} | {sample['rss_mb']:.1f} |")
    loads = f"{load_before}; {load_average()}"
    print("load averages (before; after):", loads)
    out = REPO / "bench" / "memory-results.json"
    out.write_text(json.dumps({"jobs": args.jobs, "samples": samples, "load": loads}))


if __name__ == "__main__":
    main()
