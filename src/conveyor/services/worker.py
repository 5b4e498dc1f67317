"""``conveyor worker``: one or more worker processes on the queue."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue

from conveyor.config import Settings
from conveyor.errors import ConveyorError
from conveyor.hashtag import queue_route_key
from conveyor.log import get_logger
from conveyor.observability.logging import configure_logging
from conveyor.redis import connect
from conveyor.registry import load_registry
from conveyor.services.app_worker import configured_worker
from conveyor.services.redis_connection import redis_url, sentinel_password
from conveyor.services.restarts import RestartPolicy
from conveyor.worker import Worker, WorkerGroup
from conveyor.worker.options import worker_name
from conveyor.worker.recovery import release_dead_worker
from conveyor.worker.watchdog import LoopWatchdog

log = get_logger("conveyor.service.worker")

#: Exit code of a worker process that ended itself because its event loop was blocked.
EXIT_LOOP_BLOCKED = 70
#: Exit code of a worker process that failed before it took jobs (a setting, the catalogue,
#: Redis): restarting it cannot help, so the supervisor stops (sysexits' EX_CONFIG).
EXIT_START_FAILED = 78
#: A process that ran this long before crashing restarts without delay growth.
HEALTHY_AFTER_S = 60.0
#: When a crashed worker process runs again (the same rule as ``conveyor up``).
RESTART = RestartPolicy(stable_after_s=HEALTHY_AFTER_S)


def _nothing() -> None:
    return None


async def serve(
    settings: Settings, url: str, started: Callable[[], None] = _nothing, name: str | None = None
) -> None:
    """Run one worker in this process until SIGTERM or SIGINT, then drain gracefully.

    ``started`` is called once the worker is set up and about to take jobs; ``name`` is the
    worker's (a supervisor's choice), by default one of its own."""
    registry = load_registry(settings.tasks)
    async with configured_worker(registry, settings, url, name=name) as worker:
        await _serve_worker(worker, settings, started)


async def _serve_worker(
    worker: Worker | WorkerGroup, settings: Settings, started: Callable[[], None]
) -> None:
    loop = asyncio.get_running_loop()
    watchdog = LoopWatchdog(
        settings.watchdog_s or settings.lock_duration_ms / 1000,
        lambda blocked: _blocked(worker, blocked),
    )

    def on_signal(signum: int, _frame: object) -> None:
        # A plain handler (not loop.add_signal_handler) so a late second signal, arriving
        # after the loop has closed, is ignored instead of killing a process that shut down.
        if not loop.is_closed():
            loop.call_soon_threadsafe(worker.stop)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    watchdog.start()
    started()
    try:
        await worker.run(grace_s=settings.shutdown_grace_s)
    finally:
        await watchdog.stop()


def _blocked(worker: Worker | WorkerGroup, blocked_s: float) -> None:
    """Runs in the watchdog thread: the loop is stuck, so end the process now."""
    log.critical(
        "event_loop_blocked",
        blocked_s=round(blocked_s, 1),
        active_jobs=",".join(worker.active_job_ids()),
        action="exit; the stalled-job check recovers the jobs",
    )
    logging.shutdown()
    os._exit(EXIT_LOOP_BLOCKED)


def limit_memory(max_mb: int | None) -> None:
    """Cap this process's address space, so a runaway handler gets MemoryError."""
    if max_mb is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = max_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _serve_process(
    settings: Settings, url: str, started: Callable[[], None] = _nothing, name: str | None = None
) -> None:
    limit_memory(settings.max_memory_mb)
    asyncio.run(serve(settings, url, started, name))


def _child(settings: Settings, url: str, index: int, errors: SimpleQueue[str], tag: str) -> None:
    configure_logging(settings.log_level, settings.log_format)
    running = False

    def started() -> None:
        nonlocal running
        running = True

    try:
        _serve_process(settings, url, started, worker_name(os.getpid(), tag))
    except ConveyorError as exc:
        if running:
            log.error("worker_error", error=str(exc))
            sys.exit(1)
        errors.put(f"worker process {index} could not start: {exc}")
        sys.exit(EXIT_START_FAILED)


def run(settings: Settings) -> int:
    """Start ``settings.processes`` worker processes (in this process when 1); exit code."""
    with redis_url(settings) as url:
        if settings.processes == 1:
            _serve_process(settings, url)
            return 0
        # A catalogue that does not import is one error here, not N restarting children.
        load_registry(settings.tasks)
        return _supervise(settings, url)


class _Supervisor:
    """Runs N worker processes; restarts one that dies (with backoff) until told to stop.

    It names each process (``worker_name``: the prefix of its lock tokens), so when one dies
    it puts back the jobs that process still locks at once (``release_dead_worker``), before
    any restart, instead of leaving them to lock expiry.

    A process that fails before it takes jobs (EXIT_START_FAILED) stops them all: its error is
    raised as the supervisor's own, since a restart would fail the same way."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.ctx = multiprocessing.get_context("spawn")
        self.children: dict[int, BaseProcess] = {}
        #: The worker name of each running process.
        self.names: dict[int, str] = {}
        self.started_at: dict[int, float] = {}
        #: Crashes in a row of each process (a healthy run starts the count again).
        self.crashes: dict[int, int] = {}
        self.stopping = False
        self.errors: SimpleQueue[str] = self.ctx.SimpleQueue()
        self.start_error: str | None = None

    def start(self, index: int) -> None:
        tag = uuid.uuid4().hex[:6]
        child: BaseProcess = self.ctx.Process(
            target=_child,
            args=(self.settings, self.url, index, self.errors, tag),
            name=f"conveyor-worker-{index}",
        )
        child.start()
        self.children[index] = child
        assert child.pid is not None
        self.names[index] = worker_name(child.pid, tag)
        self.started_at[index] = time.monotonic()

    def forward(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.is_alive() and child.pid:
                os.kill(child.pid, signum)

    def run(self) -> int:
        for index in range(self.settings.processes):
            self.start(index)
        log.info("workers_started", processes=len(self.children))
        signal.signal(signal.SIGTERM, self.forward)
        signal.signal(signal.SIGINT, self.forward)
        # A child that got the signal before it could install its handler had taken no job.
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        failed = False
        while self.children:
            wait([c.sentinel for c in self.children.values()], timeout=1.0)
            for index, child in list(self.children.items()):
                if child.is_alive():
                    continue
                del self.children[index]
                code = child.exitcode or 0
                if code not in (*clean, EXIT_START_FAILED):
                    self._release(self.names[index])
                if code == EXIT_START_FAILED and self.start_error is None:
                    self._give_up()
                    continue
                if self.stopping:
                    failed |= code not in clean
                    continue
                self._restart_later(index, code)
        if self.start_error is not None:
            raise ConveyorError(self.start_error)
        return 1 if failed else 0

    def _release(self, name: str) -> None:
        """Put back at once the jobs a dead process still locks. If this fails (Redis is down)
        or the supervisor dies first, its peers' heartbeat or lock expiry recovers them."""
        try:
            jobs = asyncio.run(_release_dead(self.settings, self.url, name))
        except Exception as exc:
            log.warning("dead_worker_release_failed", worker=name, error=str(exc) or repr(exc))
            return
        (log.warning if jobs else log.info)(
            "dead_worker_jobs_released",
            worker=name,
            count=len(jobs),
            job_ids=",".join(jobs[:20]),
            by="supervisor",
        )

    def _give_up(self) -> None:
        """A process could not start: stop the others; ``run`` raises its error."""
        self.start_error = (
            self.errors.get() if not self.errors.empty() else "a worker process could not start"
        )
        self.forward(signal.SIGTERM, None)

    def _restart_later(self, index: int, code: int) -> None:
        ran_s = time.monotonic() - self.started_at[index]
        self.crashes[index], delay = RESTART.after_exit(self.crashes.get(index, 0), ran_s)
        log.warning("worker_process_exited", index=index, exit_code=code, restart_in_s=delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.05)
        if not self.stopping:
            self.start(index)


async def _release_dead(settings: Settings, url: str, name: str) -> list[str]:
    released: list[str] = []
    for queue in settings.queue_weights:  # a client per queue: its slot's master in a cluster
        redis = connect(
            url,
            timeout_s=settings.redis_timeout_s,
            sentinel_password=sentinel_password(settings),
            route_key=queue_route_key(settings.prefix, queue),
        )
        one = settings.model_copy(update={"queue": queue, "queues": {}})
        try:
            released += await asyncio.wait_for(
                release_dead_worker(redis, one, name), settings.redis_timeout_s + 1
            )
        finally:
            await redis.aclose()
    return released


def _supervise(settings: Settings, url: str) -> int:
    return _Supervisor(settings, url).run()
