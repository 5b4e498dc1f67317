"""The measurements: processing throughput, enqueue-to-start latency and timeliness.

Every scenario starts from an empty Redis (FLUSHALL), runs its contender in processes of its
own and answers plain numbers; ``bench.run`` repeats them and takes medians.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import NODE_DIR, PYTHON, REPO, Proc, Store
from conveyor import JobSpec, QueueClient
from conveyor.redis import connect

QUEUE = "bench"
PREFIX = "bull"
#: BullMQ-format jobs are pre-enqueued in batches of this size.
BULK_BATCH = 1000


@dataclass(frozen=True)
class Contender:
    """One worker configuration."""

    kind: str  # conveyor | bullmq-python | bullmq-node | taskiq
    concurrency: int
    processes: int = 1
    hooks: str = "production"  # conveyor only
    loop: str = "asyncio"  # Python contenders only
    #: conveyor only: False measures a permanent failure without its failedJobs record
    records: bool = True
    #: Python contenders only: run from this checkout, with its own .venv (before/after
    #: comparisons, ``bench.compare_worker``); None is this one.
    root: Path | None = None

    @property
    def key(self) -> str:
        parts = [self.kind, f"c{self.concurrency}"]
        if self.kind == "conveyor" and self.hooks != "production":
            parts.append(f"hooks-{self.hooks}")
        if not self.records:
            parts.append("records-off")
        if self.loop != "asyncio":
            parts.append(self.loop)
        if self.processes > 1:
            parts.append(f"x{self.processes}")
        return " ".join(parts)

    @property
    def bullmq_format(self) -> bool:
        return self.kind != "taskiq"

    def command(self, url: str, expect: int) -> list[str]:
        common = ["--redis", url, "--queue", QUEUE, "--prefix", PREFIX]
        common += ["--concurrency", str(self.concurrency), "--expect", str(expect)]
        if self.kind == "bullmq-node":
            return ["node", str(NODE_DIR / "worker.mjs"), *common]
        module = {
            "conveyor": "bench.workers.conveyor_worker",
            "bullmq-python": "bench.workers.bullmq_worker",
            "taskiq": "bench.workers.taskiq_worker",
        }[self.kind]
        extra = ["--loop", self.loop]
        if self.kind == "conveyor":
            extra += ["--hooks", self.hooks]
            if not self.records:
                extra.append("--no-records")
        python = PYTHON if self.root is None else str(self.root / ".venv" / "bin" / "python")
        return [python, "-m", module, *common, *extra]


# --- producing ---------------------------------------------------------------------------------
class Producer:
    """Enqueues jobs for a contender in its own format (asyncio, in the orchestrator)."""

    def __init__(self, url: str, contender: Contender) -> None:
        self.url = url
        self.contender = contender
        self.client: QueueClient | None = None
        self.broker: Any = None
        self.task: Any = None

    async def __aenter__(self) -> Producer:
        if self.contender.bullmq_format:
            self.client = QueueClient(
                connect(self.url), queue=QUEUE, prefix=PREFIX, owns_redis=True
            )
        else:
            from bench.workers.taskiq_worker import make_broker

            self.broker = make_broker(self.url, QUEUE)
            await self.broker.startup()
            self.task = self.broker.find_task("noop")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()
        if self.broker is not None:
            await self.broker.shutdown()

    async def one(self, data: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        if self.client is not None:
            await self.client.enqueue("noop", data, options)
        else:
            await self.task.kiq(**data)

    async def backlog(self, jobs: int, data: dict[str, Any], options: dict[str, Any]) -> None:
        """``jobs`` identical jobs, as fast as the format allows (bulk for BullMQ)."""
        if self.client is not None:
            for start in range(0, jobs, BULK_BATCH):
                n = min(BULK_BATCH, jobs - start)
                await self.client.enqueue_many([JobSpec("noop", data, options)] * n)
            return
        # taskiq has no bulk enqueue: build its messages as kiq() does and XADD them in one
        # pipeline (set-up only, not measured).
        from redis.asyncio import Redis

        kicker = self.task.kicker()
        async with Redis(connection_pool=self.broker.connection_pool) as conn:
            pipe = conn.pipeline(transaction=False)
            for _ in range(jobs):
                message = self.broker.formatter.dumps(kicker._prepare_message(**data))
                pipe.xadd(self.broker.queue_name, {b"data": message.message})
            await pipe.execute()


def produce(url: str, contender: Contender, coroutine_factory: Any) -> Any:
    async def go() -> Any:
        async with Producer(url, contender) as producer:
            return await coroutine_factory(producer)

    return asyncio.run(go())


# --- running workers ---------------------------------------------------------------------------
def start_workers(contender: Contender, url: str, expect: int) -> list[Proc]:
    procs = [
        Proc(
            contender.command(url, expect if contender.processes == 1 else 0),
            root=contender.root or REPO,
        ).start()
        for _ in range(contender.processes)
    ]
    try:
        for proc in procs:
            proc.wait_ready()
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs


def _progress(store: Store, contender: Contender) -> int:
    if contender.bullmq_format:
        return store.finished(PREFIX, QUEUE)
    return store.stream_consumed(QUEUE)


def finish_workers(
    procs: list[Proc],
    store: Store,
    contender: Contender,
    expect: int,
    timeout_s: float,
    *,
    cap_s: float | None = None,
) -> list[dict[str, Any]]:
    """Wait for the workers' reports. Several processes are stopped once Redis shows all jobs
    done; with ``cap_s``, workers still busy after that long are stopped and report what they
    finished (a slow contender then counts fewer jobs instead of taking minutes)."""
    limit = cap_s if cap_s is not None else timeout_s
    try:
        if len(procs) > 1:
            deadline = time.monotonic() + limit
            while _progress(store, contender) < expect and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.2)  # the last finishes reach the workers' counters
            for proc in procs:
                proc.send("stop")
            return [proc.wait_report(30) for proc in procs]
        try:
            return [procs[0].wait_report(limit)]
        except TimeoutError:
            if cap_s is None:
                done = _progress(store, contender)
                raise TimeoutError(
                    f"{contender.key}: {done} of {expect} jobs done after {timeout_s:g} s"
                ) from None
            procs[0].send("stop")
            return [procs[0].wait_report(30)]
    finally:
        for proc in procs:
            proc.close(timeout_s=3)


def throughput(
    store: Store, contender: Contender, jobs: int, *, fail: bool = False, cap_s: float = 30
) -> dict[str, float]:
    """Jobs/s from ``go`` to the last finish over a pre-enqueued backlog of no-op jobs (at
    most ``cap_s`` seconds: then the jobs finished so far count)."""
    store.flush()
    data: dict[str, Any] = {"fail": True} if fail else {}
    options: dict[str, Any] = {"attempts": 1} if fail else {}
    produce(store.url, contender, lambda p: p.backlog(jobs, data, options))
    procs = start_workers(contender, store.url, jobs)
    cpu_before = store.cpu_seconds()
    for proc in procs:
        proc.send("go")
    reports = finish_workers(procs, store, contender, jobs, cap_s, cap_s=cap_s)
    redis_cpu = store.cpu_seconds() - cpu_before
    finished = sum(r["finished"] for r in reports)
    if finished == 0:
        raise RuntimeError(f"{contender.key}: no job finished in {cap_s:g} s")
    elapsed = max(r["t_last"] for r in reports) - min(r["t_go"] for r in reports)
    return {
        "jobs_per_s": finished / elapsed,
        "rss_mb": statistics.mean(r["rss_mb"] for r in reports),
        "worker_cpu_us_per_job": sum(r["cpu_s"] for r in reports) / finished * 1e6,
        "redis_cpu_us_per_job": redis_cpu / finished * 1e6,
        "jobs_done": finished,
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": ordered[-1] * 1000}


#: Jobs a worker runs before any timing starts (connections, scripts, JIT warm).
WARMUP_JOBS = 20
#: Enqueues in flight at most while producing an open-loop stream.
MAX_IN_FLIGHT = 32


async def _warm_up(producer: Producer, store: Store) -> None:
    """Run WARMUP_JOBS untimed jobs through the worker and wait until they are done."""
    for _ in range(WARMUP_JOBS):
        await producer.one({})
    deadline = time.monotonic() + 60
    while True:
        if producer.contender.bullmq_format:
            done = store.finished(PREFIX, QUEUE)
        else:
            done = store.stream_consumed(QUEUE)
        if done >= WARMUP_JOBS:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not finish its warm-up jobs")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # idle again: waiting on Redis


def latency(
    store: Store, contender: Contender, *, samples: int, rate: float | None, interval_s: float
) -> tuple[dict[str, float], list[float]]:
    """Enqueue-to-start latency after a warm-up: one job every ``interval_s`` to an idle worker
    (``rate`` None), or an open-loop stream at ``rate`` jobs/s (under load; at most
    MAX_IN_FLIGHT enqueues outstanding, each timed when it is sent). Answers percentiles, the
    rate achieved, and the samples."""
    store.flush()
    procs = start_workers(contender, store.url, samples + WARMUP_JOBS)
    sent: dict[int, float] = {}
    span: list[float] = []
    for proc in procs:
        proc.send("go")

    async def feed(producer: Producer) -> None:
        await _warm_up(producer, store)
        begin = time.perf_counter()
        if rate is None:
            for k in range(samples):
                sent[k] = time.time()
                await producer.one({"k": k})
                await asyncio.sleep(interval_s)
            span.append(time.perf_counter() - begin)
            return
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def send(k: int) -> None:
            async with slots:
                sent[k] = time.time()
                await producer.one({"k": k})

        tasks = []
        for k in range(samples):
            wait = begin + k / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(send(k)))
        await asyncio.gather(*tasks)
        span.append(time.perf_counter() - begin)

    try:
        produce(store.url, contender, feed)
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    reports = finish_workers(procs, store, contender, samples + WARMUP_JOBS, timeout_s=60)
    waits = [start - sent[k] for r in reports for k, start in r["starts"]]
    result = _percentiles(waits)
    result["rate"] = samples / span[0] if span and span[0] > 0 else float("nan")
    return result, waits


def delayed(store: Store, contender: Contender, *, jobs: int) -> dict[str, float]:
    """Start time minus due time of jobs delayed 50-200 ms, enqueued 10 ms apart."""
    store.flush()
    procs = start_workers(contender, store.url, jobs + WARMUP_JOBS)
    due: dict[int, float] = {}
    rng = random.Random(8)
    for proc in procs:
        proc.send("go")

    async def feed(producer: Producer) -> None:
        await _warm_up(producer, store)
        for k in range(jobs):
            delay_ms = rng.randint(50, 200)
            due[k] = time.time() + delay_ms / 1000
            await producer.one({"k": k}, {"delay": delay_ms})
            await asyncio.sleep(0.01)

    produce(store.url, contender, feed)
    reports = finish_workers(procs, store, contender, jobs + WARMUP_JOBS, timeout_s=60)
    late = [start - due[k] for r in reports for k, start in r["starts"]]
    return _percentiles(late)


#: The retry scenario: 6 attempts (5 retries), exponential backoff from 20 ms.
RETRY_ATTEMPTS = 6
RETRY_BASE_MS = 20


def retries(store: Store, contender: Contender, *, jobs: int) -> dict[str, float]:
    """Jobs failing every attempt: how late each retry starts after its backoff, and the total
    time from the first attempt to the last against the ideal sum of delays (620 ms)."""
    store.flush()
    expect = jobs * RETRY_ATTEMPTS + WARMUP_JOBS
    procs = start_workers(contender, store.url, expect)
    options = {"attempts": RETRY_ATTEMPTS, "backoff": {"type": "exponential", "delay": 20}}
    for proc in procs:
        proc.send("go")

    async def feed(producer: Producer) -> None:
        await _warm_up(producer, store)
        for k in range(jobs):
            await producer.one({"k": k, "fail": True}, options)
            await asyncio.sleep(0.025)

    produce(store.url, contender, feed)
    reports = finish_workers(procs, store, contender, expect, timeout_s=60)
    by_job: dict[int, list[float]] = {}
    for r in reports:
        for k, start in r["starts"]:
            by_job.setdefault(k, []).append(start)
    late: list[float] = []
    totals: list[float] = []
    ideal = sum(RETRY_BASE_MS * 2**i for i in range(RETRY_ATTEMPTS - 1)) / 1000
    for starts in by_job.values():
        starts.sort()
        if len(starts) != RETRY_ATTEMPTS:
            raise RuntimeError(f"{contender.key}: a job ran {len(starts)} times, not 6")
        for i in range(1, len(starts)):
            late.append(starts[i] - starts[i - 1] - RETRY_BASE_MS * 2 ** (i - 1) / 1000)
        totals.append(starts[-1] - starts[0])
    result = _percentiles(late)
    result["total_ms"] = statistics.median(totals) * 1000
    result["ideal_ms"] = ideal * 1000
    return result
