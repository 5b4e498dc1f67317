"""Throughput per shard of a Redis Cluster, against one plain Redis, in one run.

    uv run --group bench python -m bench.cluster                 # 20,000 jobs a queue, 3 rounds
    uv run --group bench python -m bench.cluster --jobs 10000 --repeats 1

Starts a plain redis-server and a Redis Cluster of 3 masters (no replicas, AOF off, like
bench.profile's), each a process of its own. Each round, interleaved:

- ``plain``: one worker process on one queue of the plain Redis;
- ``cluster-1``: one worker process on one queue of the cluster (one shard);
- ``cluster-3``: three worker processes at once, one queue on each master.

A worker process is Conveyor's Worker (concurrency 10, logging and stats on) over a backlog of
no-op jobs, enqueued in bulk beforehand. Prints jobs/s, the worker's CPU per job and the Redis
CPU per job of the node that holds the queue (``INFO cpu``), medians over the rounds. Not a
test: the figures go to docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from tests.support.cluster import ClusterSetup, tags_on_two_masters

from bench.harness import Store, private_redis
from bench.profile import Done
from bench.scenarios import BULK_BATCH
from bench.tasks import make_registry
from bench.workers.conveyor_worker import log_to_devnull
from conveyor import JobSpec, QueueClient, Settings, Worker
from conveyor.hashtag import queue_route_key, slot_of
from conveyor.hooks import HookChain
from conveyor.observability.logging import LoggingHooks
from conveyor.observability.stats import StatsHooks
from conveyor.redis import connect
from conveyor.services.app_worker import worker_options

PREFIX = "bench"


def _nothing(data: dict[str, Any]) -> None:
    return None


async def _fill(url: str, queue: str, jobs: int) -> None:
    settings = Settings(redis_url=url, queue=queue, prefix=PREFIX)
    client = QueueClient.from_settings(settings)
    for start in range(0, jobs, BULK_BATCH):
        n = min(BULK_BATCH, jobs - start)
        await client.enqueue_many([JobSpec("noop", {})] * n)
    await client.close()


async def _work(url: str, queue: str, jobs: int, go: Any) -> dict[str, float]:
    log_to_devnull()
    settings = Settings(redis_url=url, queue=queue, prefix=PREFIX, concurrency=10)
    options = worker_options(settings)
    route = queue_route_key(PREFIX, queue)
    client = connect(url, route_key=route)
    blocking = connect(url, timeout_s=options.drain_delay_s + 5, route_key=route)
    registry = make_registry(_nothing)
    done = Done(jobs)
    stats = StatsHooks(client, prefix=PREFIX, task_names=registry.names())
    worker = Worker(
        client,
        registry,
        options,
        blocking_redis=blocking,
        hooks=HookChain(LoggingHooks(), stats, done),
    )
    stats.start()
    go.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    running = asyncio.create_task(worker.run(grace_s=5))
    await done.event.wait()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    worker.stop()
    await running
    await stats.close()
    await blocking.aclose()
    await client.aclose()
    return {"jobs_per_s": jobs / wall, "worker_us_per_job": cpu / jobs * 1e6}


def _worker_process(url: str, queue: str, jobs: int, go: Any, out: Any) -> None:
    out.put(asyncio.run(_work(url, queue, jobs, go)))


def _node_cpu(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        with redis.Redis(port=port, decode_responses=True) as node:
            info = node.info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def measure(url: str, queues: list[str], ports: list[int], jobs: int) -> dict[str, float]:
    """Fill each queue, then run one worker process per queue at once; the figures."""
    for queue in queues:
        asyncio.run(_fill(url, queue, jobs))
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker_process, args=(url, q, jobs, go, out)) for q in queues]
    for proc in procs:
        proc.start()
    time.sleep(1.5)  # imported and connected
    before = _node_cpu(ports)
    wall = time.perf_counter()
    go.set()
    results = [out.get(timeout=300) for _ in procs]
    wall = time.perf_counter() - wall
    redis_cpu = _node_cpu(ports) - before
    for proc in procs:
        proc.join()
    total = jobs * len(queues)
    return {
        "jobs_per_s": total / wall,
        "per_process_jobs_per_s": statistics.mean(r["jobs_per_s"] for r in results),
        "worker_us_per_job": statistics.mean(r["worker_us_per_job"] for r in results),
        "redis_us_per_job": redis_cpu / total * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per queue")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "cluster-1": [], "cluster-3": []}
    with tempfile.TemporaryDirectory() as tmp, private_redis("plain", Path(tmp) / "p") as plain:
        cluster = ClusterSetup(Path(tmp) / "c", masters_count=3, replicas=0, aof=False).start()
        try:
            masters = cluster.masters()
            for round_ in range(args.repeats):
                Store(plain.url).flush()
                rows["plain"].append(measure(plain.url, [f"q{round_}"], [plain.port], args.jobs))
                one, _ = tags_on_two_masters(cluster, f"one{round_}")
                owner = cluster.master_of(queue_route_key(PREFIX, one))
                rows["cluster-1"].append(measure(cluster.url, [one], [owner], args.jobs))
                tags = _one_tag_per_master(cluster, f"all{round_}")
                rows["cluster-3"].append(measure(cluster.url, tags, list(masters), args.jobs))
                for name, runs in rows.items():
                    print(f"round {round_ + 1} {name}: " + _fmt(runs[-1]), flush=True)
        finally:
            cluster.stop()
    for name, runs in rows.items():
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"median {name}: " + _fmt(median))


def _one_tag_per_master(cluster: ClusterSetup, stem: str) -> list[str]:
    found: dict[int, str] = {}
    masters = cluster.masters()
    for index in range(10_000):
        tag = f"{{{stem}-{index}}}"
        slot = slot_of(tag)
        owner = next(p for p, ((a, b), _) in masters.items() if a <= slot <= b)
        found.setdefault(owner, tag)
        if len(found) == len(masters):
            return list(found.values())
    raise AssertionError("no tag for every master")


def _fmt(row: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:,.1f}" for k, v in row.items())


if __name__ == "__main__":
    main()
