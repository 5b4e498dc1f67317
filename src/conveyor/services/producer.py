"""``conveyor produce``: enqueue test jobs at a rate and with a failure mix.

SIGTERM or SIGINT ends the run early but cleanly: the batch in flight is sent, the summary
counts what was enqueued, and the exit status is 0 (a container stop is not a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.registry import load_registry
from conveyor.services.redis_connection import open_checked, redis_url

#: Jobs sent in one round trip at most.
BATCH_MAX = 500


@dataclass(frozen=True)
class ProducePlan:
    count: int
    rate: float  # jobs per second; 0 = as fast as possible
    task: str = "simulate"
    duration_ms: int = 2000
    fail_rate: float = 0.0


@dataclass(frozen=True)
class ProduceSummary:
    enqueued: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.enqueued / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _spec(plan: ProducePlan) -> JobSpec:
    data: dict[str, object] = {}
    if plan.task == "simulate":
        data = {"duration_ms": plan.duration_ms, "fail_rate": plan.fail_rate}
    return JobSpec(plan.task, data)


async def produce(
    client: QueueClient,
    plan: ProducePlan,
    progress: Progress | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> ProduceSummary:
    """Enqueue ``plan.count`` jobs, paced to ``plan.rate`` per second (batched per tick),
    or fewer if ``stop`` is set first (between batches)."""
    task_id = progress.add_task("enqueue", total=plan.count) if progress else None
    started = time.monotonic()
    sent = 0
    spec = _spec(plan)
    client.prepare(spec)  # a bad plan fails here, before anything is sent
    stop = stop or asyncio.Event()
    while sent < plan.count and not stop.is_set():
        if plan.rate > 0:
            due = int((time.monotonic() - started) * plan.rate) + 1
            batch = min(due - sent, plan.count - sent, BATCH_MAX)
            if batch <= 0:
                pause_s = max(0.001, (sent + 1) / plan.rate - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause_s)
                continue
        else:
            batch = min(BATCH_MAX, plan.count - sent)
        await client.enqueue_many([spec] * batch)
        sent += batch
        if progress is not None and task_id is not None:
            progress.update(task_id, completed=sent)
    return ProduceSummary(enqueued=sent, elapsed_s=time.monotonic() - started)


async def _main(
    settings: Settings, url: str, plan: ProducePlan, show_progress: bool
) -> ProduceSummary:
    registry = load_registry(settings.tasks)
    redis = await open_checked(settings, url)
    client = QueueClient.from_settings(settings, registry=registry, redis=redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not show_progress:
            return await produce(client, plan, stop=stop)
        columns = (
            TextColumn("[bold]enqueue"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns) as progress:
            return await produce(client, plan, progress, stop=stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await client.close()
        await redis.aclose()


def run(settings: Settings, plan: ProducePlan, *, show_progress: bool = True) -> ProduceSummary:
    with redis_url(settings) as url:
        return asyncio.run(_main(settings, url, plan, show_progress))
