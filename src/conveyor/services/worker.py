"""``conveyor worker``: one or more worker processes on the queue."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from multiprocessing.process import BaseProcess

from conveyor.config import Settings
from conveyor.errors import ConveyorError
from conveyor.hooks import HookChain, WorkerHooks
from conveyor.observability.logging import LoggingHooks, configure_logging
from conveyor.observability.stats import StatsHooks
from conveyor.redis import connect
from conveyor.registry import load_registry
from conveyor.services.runtime import default_policy, open_checked, redis_url
from conveyor.worker import Worker, WorkerOptions

log = logging.getLogger("conveyor.service.worker")


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        queue=settings.queue,
        prefix=settings.prefix,
        concurrency=settings.concurrency,
        default_policy=default_policy(settings),
        lock_duration_ms=settings.lock_duration_ms,
        stalled_interval_ms=settings.stalled_interval_ms,
        max_stalled_count=settings.max_stalled_count,
        failed_key_prefix=settings.failed_key_prefix,
        job_timeout_s=settings.job_timeout_s,
    )


async def serve(settings: Settings, url: str) -> None:
    """Run one worker in this process until SIGTERM or SIGINT, then drain gracefully."""
    registry = load_registry(settings.tasks)
    redis = await open_checked(settings, url)
    options = worker_options(settings)
    blocking = connect(url, timeout_s=options.drain_delay_s + settings.redis_timeout_s)
    hooks: WorkerHooks = LoggingHooks()
    stats: StatsHooks | None = None
    if settings.stats_enabled:
        stats = StatsHooks(
            redis,
            prefix=settings.prefix,
            history_minutes=settings.stats_history_minutes,
            task_names=registry.names(),
        )
        stats.start()
        hooks = HookChain(hooks, stats)
    worker = Worker(redis, registry, options, blocking_redis=blocking, hooks=hooks)
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, _frame: object) -> None:
        # A plain handler (not loop.add_signal_handler) so a late second signal, arriving
        # after the loop has closed, is ignored instead of killing a process that shut down.
        if not loop.is_closed():
            loop.call_soon_threadsafe(worker.stop)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        await worker.run(grace_s=settings.shutdown_grace_s)
    finally:
        if stats is not None:
            await stats.close()  # the last second's counts
        await blocking.aclose()
        await redis.aclose()


def _child(settings: Settings, url: str) -> None:
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings, url))
    except ConveyorError as exc:
        log.error("worker_error", extra={"fields": {"error": str(exc)}})
        sys.exit(1)


def run(settings: Settings) -> int:
    """Start ``settings.processes`` worker processes (in this process when 1); exit code."""
    with redis_url(settings) as url:
        if settings.processes == 1:
            asyncio.run(serve(settings, url))
            return 0
        return _supervise(settings, url)


def _supervise(settings: Settings, url: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    for index in range(settings.processes):
        child: BaseProcess = ctx.Process(
            target=_child, args=(settings, url), name=f"conveyor-worker-{index}"
        )
        child.start()
        children.append(child)
    log.info("workers_started", extra={"fields": {"processes": len(children)}})

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    # A child that got the signal before it could install its handler had taken no job yet.
    clean = (0, -signal.SIGTERM, -signal.SIGINT)
    codes = [child.exitcode or 0 for child in children]
    return 0 if all(code in clean for code in codes) else 1
