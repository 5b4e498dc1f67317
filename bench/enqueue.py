"""Enqueue throughput of the Python libraries, run in a process of its own by ``bench.run``.

    python -m bench.enqueue --lib conveyor --mode bulk --redis URL --queue q --jobs 10000

``--mode single``: one job at a time, each awaited (round-trip bound); ``concurrent``:
``--tasks`` coroutines enqueueing one at a time each; ``bulk``: batches of ``--batch`` in one
call. Prints ``{"jobs": n, "elapsed_s": s, "cpu_s": c}`` (``cpu_s``: this process's CPU time
over the same span); connections are opened, and one job enqueued, before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

LIBS = ("conveyor", "bullmq-python", "bullmq-node", "taskiq")
MODES = ("single", "concurrent", "bulk")
#: Jobs in flight for ``concurrent``; jobs per call for ``bulk``.
TASKS = 50
BATCH = 1000


def enqueue_rate(url: str, queue: str, lib: str, mode: str, jobs: int) -> float:
    """Jobs/s of one library and mode, measured in a fresh process (called by bench.run)."""
    from bench.harness import NODE_DIR, PYTHON, run_json

    args = ["--redis", url, "--queue", queue, "--mode", mode, "--jobs", str(jobs)]
    args += ["--tasks", str(TASKS), "--batch", str(BATCH)]
    if lib == "bullmq-node":
        command = ["node", str(NODE_DIR / "enqueue.mjs"), *args]
    else:
        command = [PYTHON, "-m", "bench.enqueue", "--lib", lib, *args]
    doc = run_json(command, timeout_s=300)
    return float(doc["jobs"]) / float(doc["elapsed_s"])


async def drive(
    mode: str,
    jobs: int,
    tasks: int,
    batch: int,
    one: Callable[[], Awaitable[Any]],
    many: Callable[[int], Awaitable[Any]] | None,
) -> tuple[float, float]:
    """Wall and CPU seconds of the run (after one warm-up call, not counted)."""
    await one()
    started, cpu = time.perf_counter(), time.process_time()
    if mode == "single":
        for _ in range(jobs):
            await one()
    elif mode == "concurrent":
        left = jobs

        async def lane() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        await asyncio.gather(*(lane() for _ in range(tasks)))
    else:
        if many is None:
            raise SystemExit("this library has no bulk enqueue")
        for start in range(0, jobs, batch):
            await many(min(batch, jobs - start))
    return time.perf_counter() - started, time.process_time() - cpu


async def main(args: argparse.Namespace) -> None:
    if args.lib == "conveyor":
        from bench.tasks import registry
        from conveyor import JobSpec, QueueClient
        from conveyor.redis import connect

        client = QueueClient(
            connect(args.redis), queue=args.queue, prefix=args.prefix, registry=registry,
            owns_redis=True,
        )  # fmt: skip
        await client.redis.ping()
        elapsed, cpu = await drive(
            args.mode, args.jobs, args.tasks, args.batch,
            lambda: client.enqueue("noop", {}),
            lambda n: client.enqueue_many([JobSpec("noop", {}) for _ in range(n)]),
        )  # fmt: skip
        await client.close()
    elif args.lib == "bullmq-python":
        from bullmq import Queue

        queue = Queue(args.queue, {"connection": args.redis, "prefix": args.prefix})
        await queue.client.ping()
        elapsed, cpu = await drive(
            args.mode, args.jobs, args.tasks, args.batch,
            lambda: queue.add("noop", {}),
            lambda n: queue.addBulk([{"name": "noop", "data": {}} for _ in range(n)]),
        )  # fmt: skip
        await queue.close()
    else:
        from bench.workers.taskiq_worker import make_broker

        broker = make_broker(args.redis, args.queue)
        await broker.startup()
        task = broker.find_task("noop")
        assert task is not None
        elapsed, cpu = await drive(
            args.mode, args.jobs, args.tasks, args.batch, lambda: task.kiq(), None
        )
        await broker.shutdown()
    print(json.dumps({"jobs": args.jobs, "elapsed_s": elapsed, "cpu_s": cpu}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", choices=[lib for lib in LIBS if lib != "bullmq-node"])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefix", default="bull")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--batch", type=int, default=BATCH)
    asyncio.run(main(parser.parse_args()))
