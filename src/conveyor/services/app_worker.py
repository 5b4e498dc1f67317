"""A worker inside an application's own event loop: ``run_worker``, and the wiring it shares
with ``conveyor worker`` (connections, hooks from the settings, the Worker itself)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from conveyor.config import Settings, describe_validation_error, load_settings
from conveyor.errors import ConfigurationError
from conveyor.hashtag import queue_route_key
from conveyor.hooks import HookChain, WorkerHooks
from conveyor.log import get_logger
from conveyor.observability.logging import LoggingHooks
from conveyor.observability.routed import QueueRoutedHooks
from conveyor.observability.stats import StatsHooks
from conveyor.redis import connect
from conveyor.registry import TaskRegistry
from conveyor.services.declared import bring_in_line
from conveyor.services.redis_connection import (
    QueueConnections,
    open_checked,
    redis_url,
    sentinel_password,
)
from conveyor.worker import Worker, WorkerGroup, WorkerOptions

log = get_logger("conveyor.service.worker")


async def apply_limit_settings(served: Worker | WorkerGroup, settings: Settings) -> None:
    """Write the queue-wide limits the settings give (CONVEYOR_RATE_LIMIT,
    CONVEYOR_QUEUE_CONCURRENCY) to each queue the worker serves, leaving any not given as
    Redis holds them."""
    limits, parts = settings.queue_limits
    if not parts:
        return
    for worker in served.workers if isinstance(served, WorkerGroup) else [served]:
        await worker.bull.set_limits(limits, parts)
        log.info(
            "queue_limits_applied",
            queue=worker.bull.name,
            rate=str(limits.rate) if "rate" in parts else "unchanged",
            concurrency=limits.concurrency if "concurrency" in parts else "unchanged",
        )


def worker_options(settings: Settings, name: str | None = None) -> WorkerOptions:
    """The worker's options as the settings give them (``name``: chosen by a supervisor)."""
    options = WorkerOptions(
        queue=settings.queue,
        prefix=settings.prefix,
        concurrency=settings.concurrency,
        default_policy=settings.retry_policy,
        lock_duration_ms=settings.lock_duration_ms,
        stalled_interval_ms=settings.stalled_interval_ms,
        max_stalled_count=settings.max_stalled_count,
        failed_key_prefix=settings.failed_key_prefix,
        job_timeout_s=settings.job_timeout_s,
        unknown_task_timeout_s=settings.unknown_task_timeout_s,
        limiter=settings.worker_limiter,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        dead_worker_after_ms=settings.dead_worker_after_ms,
    )
    return dataclasses.replace(options, name=name) if name else options


@contextlib.asynccontextmanager
async def configured_worker(
    registry: TaskRegistry,
    settings: Settings,
    url: str,
    hooks: WorkerHooks | None = None,
    name: str | None = None,
) -> AsyncIterator[Worker | WorkerGroup]:
    """A Worker on ``url`` (a WorkerGroup when ``settings.queues`` lists several) with the
    hooks the settings ask for (logging; the monitor's stats when ``stats_enabled``; then
    ``hooks``), not yet running. Its connections are checked on the way in (Redis answers,
    ``noeviction``) and closed on the way out, after the stats have written their last
    second. In a Redis Cluster each queue has its own (to the master of its slot)."""
    redis = await open_checked(settings, url)
    try:
        await bring_in_line(redis, registry, settings)  # the schedules declared in code
    except BaseException:
        await redis.aclose()
        raise
    # The queue's, or every queue's but for the name; ``name``: a supervisor's choice.
    options = worker_options(settings, name)
    weights = settings.queue_weights
    conns = QueueConnections(settings, url, redis)
    blocking: dict[str, Redis] = {}
    stats: dict[int, StatsHooks] = {}
    try:
        clients = {queue: await conns.of(queue) for queue in weights}
        for queue, client in clients.items():
            blocking[queue] = connect(
                url,
                timeout_s=options.drain_delay_s + settings.redis_timeout_s,
                sentinel_password=sentinel_password(settings),
                route_key=queue_route_key(settings.prefix, queue),
            )
            if settings.stats_enabled and id(client) not in stats:
                stats[id(client)] = StatsHooks(
                    client,
                    prefix=settings.prefix,
                    history_minutes=settings.stats_history_minutes,
                    task_names=registry.names(),
                )
        all_hooks = _hooks(clients, stats, hooks)
        served: Worker | WorkerGroup
        if len(weights) == 1:
            served = Worker(
                redis, registry, options, blocking_redis=blocking[settings.queue], hooks=all_hooks
            )
        else:
            served = WorkerGroup(
                clients, registry, options, weights, blocking_redis=blocking, hooks=all_hooks
            )
        await apply_limit_settings(served, settings)
        yield served
    finally:
        for hook in stats.values():
            await hook.close()  # the last second's counts
        for client in blocking.values():
            await client.aclose()
        await conns.aclose()
        await redis.aclose()


def _hooks(
    clients: dict[str, Redis], stats: dict[int, StatsHooks], hooks: WorkerHooks | None
) -> WorkerHooks:
    """Logging, then the stats (one StatsHooks per client: per queue in a cluster), then
    ``hooks``. Starts the stats' flushing."""
    chain: list[WorkerHooks] = [LoggingHooks()]
    for hook in stats.values():
        hook.start()
    if len(stats) == 1:
        chain.extend(stats.values())
    elif stats:
        chain.append(QueueRoutedHooks({q: stats[id(c)] for q, c in clients.items()}))
    if hooks is not None:
        chain.append(hooks)
    return chain[0] if len(chain) == 1 else HookChain(*chain)


async def run_worker(
    registry: TaskRegistry,
    settings: Settings | None = None,
    *,
    queue: str | None = None,
    concurrency: int | None = None,
    hooks: WorkerHooks | None = None,
    handle_signals: bool = True,
) -> None:
    """Run a worker for ``registry``'s tasks in this event loop until it is cancelled or,
    with ``handle_signals`` (in the main thread), until SIGINT or SIGTERM.

    Either way it stops as ``conveyor worker`` does: it takes no more jobs, lets the active
    ones finish within ``shutdown_grace_s`` and hands any still running back to the queue;
    then a cancellation is re-raised and a signal returns. A second cancellation during that
    wait ends it at once, leaving jobs still running to the stalled-job check.

    ``settings`` default to the environment's (``load_settings()``); ``queue`` (that queue
    alone, whatever ``queues`` says) and ``concurrency`` override theirs. With no
    ``redis_url`` it uses (and starts if needed) the embedded Redis of ``data_dir``, as the
    commands do. Logs go through the ``logging``
    module: configure it in the application. ``hooks`` are called after Conveyor's own
    (logging, and the monitor's stats). Raises ConfigurationError for a bad override,
    RedisUnavailableError or RedisPolicyError when Redis does not answer in ``redis_wait_s``
    or evicts keys."""
    settings = settings if settings is not None else load_settings()
    overrides: dict[str, Any] = {}
    if queue is not None:
        overrides["queue"] = queue
        overrides["queues"] = {}
    if concurrency is not None:
        overrides["concurrency"] = concurrency
    if overrides:
        try:
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc)) from exc
    async with contextlib.AsyncExitStack() as stack:
        if settings.redis_url:
            url = settings.redis_url
        else:  # starting and leaving the embedded Redis block: not on the application's loop
            embedded = redis_url(settings)
            url = await asyncio.to_thread(embedded.__enter__)
            stack.push_async_callback(asyncio.to_thread, embedded.__exit__, None, None, None)
        worker = await stack.enter_async_context(configured_worker(registry, settings, url, hooks))
        if handle_signals and threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, worker.stop)
                stack.callback(loop.remove_signal_handler, sig)
        running = asyncio.ensure_future(worker.run(grace_s=settings.shutdown_grace_s))
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            # Cancelled from outside: stop gracefully, then let the cancellation go on.
            worker.stop()
            await running
            raise
