"""Profile Conveyor's worker in one process: where does the CPU of a job go?

    uv run --group bench python -m bench.profile                    # c10, production hooks
    uv run --group bench python -m bench.profile --hooks none --concurrency 100
    uv run --group bench python -m bench.profile --cprofile 30      # top 30 functions
    uv run --group bench python -m bench.profile --fail             # the failure path

Starts a private redis-server (plain, no AOF), enqueues a backlog of no-op jobs in bulk, runs
the worker in this process until all are finished and prints jobs/s, the worker's CPU per job
(this process's CPU time while the worker ran) and Redis's CPU per job. Repeats ``--repeats``
times and prints the median. Not a test; the comparison with other contenders is bench.run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Store, private_redis
from bench.scenarios import BULK_BATCH, PREFIX, QUEUE
from bench.tasks import make_registry
from bench.workers.conveyor_worker import log_to_devnull
from conveyor import JobEvent, JobSpec, QueueClient, Worker, WorkerHooks, WorkerOptions
from conveyor.hooks import HookChain, NoHooks
from conveyor.observability.logging import LoggingHooks
from conveyor.observability.stats import StatsHooks
from conveyor.redis import connect


class Done(NoHooks):
    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.count = 0
        self.event = asyncio.Event()

    def _one(self) -> None:
        self.count += 1
        if self.count >= self.expect:
            self.event.set()

    def job_completed(self, event: JobEvent) -> None:
        self._one()

    def job_retrying(self, event: JobEvent) -> None:
        self._one()

    def job_failed(self, event: JobEvent) -> None:
        self._one()


def _fail_on_purpose(data: dict[str, Any]) -> None:
    if data.get("fail"):
        raise RuntimeError("bench: this job fails on purpose")


def print_commandstats(store: Store, jobs: int) -> None:
    """Redis's own account of the run (INFO commandstats): per command, calls and server
    time per job and per call, the most expensive first. Commands inside a script are counted
    under their own names as well as the script's EVAL/EVALSHA."""
    stats = store.client.info("commandstats")
    rows = sorted(stats.items(), key=lambda kv: -float(kv[1]["usec"]))
    print(f"    {'command':<24} {'calls/job':>9} {'us/job':>8} {'us/call':>8}")
    for name, row in rows:
        calls, usec = int(row["calls"]), float(row["usec"])
        command = name.removeprefix("cmdstat_")
        print(f"    {command:<24} {calls / jobs:>9.2f} {usec / jobs:>8.2f} {usec / calls:>8.2f}")


async def one_run(
    url: str, args: argparse.Namespace, profiler: cProfile.Profile | None
) -> dict[str, float]:
    store = Store(url)
    store.flush()
    data: dict[str, Any] = {"fail": True} if args.fail else {}
    options: dict[str, Any] = {"attempts": 1} if args.fail else {}
    client = QueueClient(connect(url), queue=QUEUE, prefix=PREFIX, owns_redis=True)
    for start in range(0, args.jobs, BULK_BATCH):
        n = min(BULK_BATCH, args.jobs - start)
        await client.enqueue_many([JobSpec("noop", data, options)] * n)
    await client.close()
    registry = make_registry(_fail_on_purpose)
    worker_options = WorkerOptions(queue=QUEUE, prefix=PREFIX, concurrency=args.concurrency)
    redis = connect(url)
    blocking = connect(url, timeout_s=worker_options.drain_delay_s + 5)
    done = Done(args.jobs)
    chain: list[WorkerHooks] = []
    stats: StatsHooks | None = None
    if args.hooks in ("logging", "production"):
        chain.append(LoggingHooks())
    if args.hooks in ("stats", "production"):
        stats = StatsHooks(redis, prefix=PREFIX, task_names=registry.names())
        chain.append(stats)
    chain.append(done)
    worker = Worker(
        redis, registry, worker_options, blocking_redis=blocking, hooks=HookChain(*chain)
    )
    if stats is not None:
        stats.start()
    if args.commandstats:
        store.client.config_resetstat()
    redis_cpu = store.cpu_seconds()
    cpu = time.process_time()
    wall = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    running = asyncio.create_task(worker.run(grace_s=5))
    await done.event.wait()
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    redis_cpu = store.cpu_seconds() - redis_cpu
    if args.commandstats:
        print_commandstats(store, args.jobs)
    worker.stop()
    await running
    if stats is not None:
        await stats.close()
    await blocking.aclose()
    await redis.aclose()
    return {
        "jobs_per_s": args.jobs / wall,
        "worker_us_per_job": cpu / args.jobs * 1e6,
        "redis_us_per_job": redis_cpu / args.jobs * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--hooks", choices=("none", "logging", "stats", "production"), default="production"
    )
    parser.add_argument("--fail", action="store_true", help="every job fails (attempts 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--cprofile", type=int, default=0, help="print the top N functions")
    parser.add_argument(
        "--commandstats", action="store_true", help="print Redis's time per command per job"
    )
    args = parser.parse_args()
    if args.hooks in ("logging", "production"):
        log_to_devnull()
    runs = []
    with tempfile.TemporaryDirectory() as tmp, private_redis("plain", Path(tmp)) as server:
        for _ in range(args.repeats):
            profiler = cProfile.Profile() if args.cprofile else None
            if args.loop == "uvloop":
                import uvloop

                result = uvloop.run(one_run(server.url, args, profiler))
            else:
                result = asyncio.run(one_run(server.url, args, profiler))
            runs.append(result)
            print("  " + "  ".join(f"{k}={v:,.1f}" for k, v in result.items()), flush=True)
            if profiler is not None:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.cprofile)
                print(out.getvalue())
    print(
        "median: " + "  ".join(f"{k}={statistics.median(r[k] for r in runs):,.1f}" for k in runs[0])
    )


if __name__ == "__main__":
    main()
