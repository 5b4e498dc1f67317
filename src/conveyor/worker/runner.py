"""The worker's loop: takes jobs from a BullMQ queue, hands each to an attempt (``attempt``),
keeps their locks, recovers stalled jobs, and shuts down gracefully.

Delivery is at-least-once. What happens if the process dies:
- before a job is taken: nothing was taken.
- while a job runs: its supervisor (``--processes N``) or, within seconds, a peer that sees
  its heartbeat stop and its connections gone (``heartbeat``) puts back the jobs it still
  locks; failing both, its lock expires and the stalled-job check (any worker's) puts them
  back. Either way they run again: handlers must be idempotent.
- while finishing: each finish is one BullMQ script (atomic); a permanent failure and its
  failure record (``conveyor.keys.FailureKeys``) are written by one script call, so they
  cannot disagree.

A job whose task this worker does not know is put back for another worker (see ``unknown``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from conveyor._bullmq import BullQueue, Fetched, JobRecord
from conveyor.backoff import capped_backoff
from conveyor.clock import now_ms
from conveyor.errors import ConveyorError
from conveyor.hooks import NoHooks, WorkerHooks
from conveyor.log import get_logger
from conveyor.registry import TaskRegistry
from conveyor.resp import RespConnection
from conveyor.worker.attempt import Attempts, cancelled_by_worker
from conveyor.worker.heartbeat import Heartbeat
from conveyor.worker.options import REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S, WorkerOptions
from conveyor.worker.reconciler import FailureReconciler
from conveyor.worker.slots import SlotPool, YieldingStop
from conveyor.worker.stack import describe

log = get_logger("conveyor.worker")

T = TypeVar("T")

#: Shortest block. Not 1 ms: Redis before 7.0.8 turns a 0.001 s timeout into 0.999 ms, truncates
#: it to 0 and blocks for ever (BullMQ rounds up to whole seconds on those versions for the
#: same reason). 2 ms converts exactly.
MIN_BLOCK_S = 0.002
#: A due job's wake-up comes this long after its due time (BullMQ's times are whole ms).
WAKE_MARGIN_S = 0.001


class Worker:
    """Runs jobs of one queue with ``concurrency`` at once in one asyncio loop.

    ``await worker.run()`` until ``worker.stop()``; then active jobs get ``grace_s`` to finish
    and any still running are handed back to the queue (never failed by the shutdown).
    """

    def __init__(
        self,
        redis: Redis,
        registry: TaskRegistry,
        options: WorkerOptions,
        *,
        blocking_redis: Redis,
        hooks: WorkerHooks | None = None,
        slots: SlotPool | None = None,
    ) -> None:
        self.redis = redis
        self.blocking_redis = blocking_redis
        self.registry = registry
        self.options = options
        self.hooks: WorkerHooks = hooks or NoHooks()
        self._hot_path = RespConnection.like(redis)
        self.bull = BullQueue(redis, options.queue, options.prefix, hot_path=self._hot_path)
        self.bull.worker_name = options.name
        self.bull.set_limiter(options.limiter)
        self._records = self.bull.failure_store(options.failed_key_prefix)
        self._reconciler = FailureReconciler(self.bull, self._records)
        # The connection that blocks on the queue's marker while idle: named as BullMQ names
        # worker connections (the monitor's and Node's worker lists), and with its CLIENT ID so
        # a timer can end the wait at a delayed job's due time.
        self._blocking = RespConnection.like(blocking_redis)
        # Its replies take up to drain_delay_s by design, whatever the client's own timeout.
        self._blocking.timeout_s = max(self._blocking.timeout_s, options.drain_delay_s + 5)
        self._blocking.client_name = self.bull.client_name(options.name)
        self._blocking.want_client_id = True
        self._active: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._slots = 0
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._token_seq = 0
        #: Shared with the other queues of this process (``CONVEYOR_QUEUES``), or None: then
        #: ``options.concurrency`` is this worker's own.
        self._pool = slots
        self._attempts = Attempts(
            self.bull,
            registry,
            options,
            self.hooks,
            self._records,
            self._stopping if slots is None else YieldingStop(self._stopping, slots, options.queue),
        )
        self._run_attempt = self._attempts.run
        self._heartbeat = Heartbeat(self.bull, self._hot_path, options)
        self._attempts.cancels.tasks = self._active  # where a cancelled job's task is found
        self.running = False

    # --- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking jobs; ``run()`` returns once active jobs are done (or handed back)."""
        self._stopping.set()

    def active_job_ids(self) -> list[str]:
        """Ids of the jobs running now (safe to call from another thread)."""
        return list(self._active.copy())

    async def run(self, grace_s: float = 30.0) -> None:
        self.running = True
        with contextlib.suppress(RedisError, OSError):
            await self._blocking.connect()  # shows up in worker lists at once
        log.info(
            "worker_started",
            queue=self.options.queue,
            worker=self.options.name,
            concurrency=self.options.concurrency,
            tasks=",".join(self.registry.names()),
        )
        background = [
            asyncio.create_task(self._renew_locks(), name="conveyor-lock-renewal"),
            asyncio.create_task(self._check_stalled(), name="conveyor-stalled-check"),
            asyncio.create_task(self._attempts.cancels.run(), name="conveyor-cancel-watch"),
            asyncio.create_task(self._heartbeat.run(), name="conveyor-heartbeat"),
        ]
        try:
            await self._fetch_loop()
            await self._drain(grace_s)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._heartbeat.leave()
            self._attempts.close()
            await self._hot_path.close()
            await self._blocking.close()
            self.running = False
            log.info("worker_stopped", worker=self.options.name, jobs_done=self._attempts.jobs_done)

    async def _drain(self, grace_s: float) -> None:
        if not self._active:
            return
        log.info("worker_draining", active=len(self._active), grace_s=grace_s)
        tasks = [task for _, task in self._active.values()]
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if not pending:
            return
        # Out of time: stop the handlers and give their jobs back to the queue.
        leftovers = dict(self._active)
        for _, task in leftovers.values():
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for job_id, (token, _) in leftovers.items():
            try:
                await self.bull.release_to_wait(job_id, token)
                log.warning("job_released", job_id=job_id)
            except (RedisError, OSError, ConveyorError) as exc:
                # The lock will expire and the stalled check will recover it.
                log.warning("job_release_failed", job_id=job_id, error=str(exc))

    # --- taking jobs ---------------------------------------------------------------------------
    def _next_token(self) -> str:
        self._token_seq += 1
        return f"{self.options.name}:{self._token_seq}"

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self._slots >= self.options.concurrency:
                self._slot_freed.clear()
                await self._until(self._slot_freed.wait())
                continue
            token = self._next_token()
            try:
                if self._pool is None:
                    fetched = await self.bull.move_to_active(token, self.options.lock_duration_ms)
                else:
                    fetched = await self._pooled_fetch(token)
            except (RedisError, OSError) as exc:
                failures += 1
                await self._redis_trouble("move_to_active", exc, failures)
                continue
            except Exception as exc:  # never let the loop die silently
                failures += 1
                log.exception("fetch_failed")
                await self._redis_trouble("move_to_active", exc, failures)
                continue
            failures = 0
            if fetched.job is not None:
                self._start(fetched.job, token)
                continue
            if fetched.limit_until_ms:
                # Rate limited (or held): nothing can start before then, whatever the marker
                # says (as Node's worker, sleep rather than wake for every job added).
                await self._until(asyncio.sleep(fetched.limit_until_ms / 1000))
                continue
            timeout = self.options.drain_delay_s
            if fetched.next_delayed_ms:
                due_in = (fetched.next_delayed_ms - now_ms()) / 1000
                timeout = min(timeout, due_in)
            timeout = max(timeout, MIN_BLOCK_S)
            wake: asyncio.TimerHandle | None = None
            if timeout < self.options.drain_delay_s:
                # Something is due at a known time. Redis ends a blocking wait only on its own
                # clock tick (every 100 ms at its default hz 10), so end it ourselves, on time.
                wake = asyncio.get_running_loop().call_later(
                    timeout + WAKE_MARGIN_S, self.bull.unblock, self._blocking
                )
            try:
                await self._until(self.bull.wait_for_marker(self._blocking, timeout))
            except (RedisError, OSError) as exc:
                failures += 1
                await self._redis_trouble("wait_for_marker", exc, failures)
            finally:
                if wake is not None:
                    wake.cancel()

    async def _pooled_fetch(self, token: str) -> Fetched:
        """Take a slot of the shared pool, then a job; the slot goes back unless a job came."""
        assert self._pool is not None
        if not await self._until(self._pool.take(self.options.queue)):
            return Fetched(job=None)  # stopping
        fetched = None
        try:
            fetched = await self.bull.move_to_active(token, self.options.lock_duration_ms)
        finally:
            if fetched is None or fetched.job is None:
                self._pool.give_back(self.options.queue)
        return fetched

    async def _until(self, awaitable: Coroutine[Any, Any, T]) -> T | None:
        """Await ``awaitable`` unless stop() comes first (then cancel it and answer None)."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
            await task
        return None

    async def _redis_trouble(self, where: str, exc: BaseException, failures: int) -> None:
        delay = capped_backoff(failures, REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S)
        log.warning("redis_error", where=where, error=describe(exc), retry_in_s=delay)
        await self._until(asyncio.sleep(delay))

    def _start(self, job: JobRecord, token: str) -> None:
        self._slots += 1
        task = asyncio.create_task(self._work(job, token), name=f"conveyor-job-{job.id}")
        self._active[job.id] = (token, task)

    async def _work(self, job: JobRecord | None, token: str) -> None:
        try:
            while job is not None:
                current = job
                try:
                    job = await self._run_attempt(current, token)
                except Exception:
                    # Not a handler error (those are recorded): finishing the job failed in an
                    # unexpected way. Leave it locked; the stalled-job check recovers it.
                    log.exception("job_finish_failed", job_id=current.id)
                    job = None
                finally:
                    self._active.pop(current.id, None)
                if job is not None:
                    self._active[job.id] = (token, asyncio.current_task())  # type: ignore[assignment]
        finally:
            self._slots -= 1
            self._slot_freed.set()
            if self._pool is not None:
                self._pool.give_back(self.options.queue)

    # --- background duties ---------------------------------------------------------------------
    async def _renew_locks(self) -> None:
        interval = self.options.lock_duration_ms / 2000
        while True:
            await asyncio.sleep(interval)
            if not self._active:
                continue
            ids = list(self._active)
            tokens = [self._active[j][0] for j in ids if j in self._active]
            ids = [j for j in ids if j in self._active]
            try:
                lost = await self.bull.extend_locks(ids, tokens, self.options.lock_duration_ms)
            except Exception as exc:  # Redis trouble or worse: try again next round
                log.warning("redis_error", where="renew_locks", error=describe(exc))
                continue
            for job_id in lost:
                log.warning("job_lock_renewal_failed", job_id=job_id)

    async def _check_stalled(self) -> None:
        interval = self.options.stalled_interval_ms / 1000
        while True:
            try:
                recovered = await self.bull.recover_stalled(
                    self.options.max_stalled_count, self.options.stalled_interval_ms
                )
            except Exception as exc:  # Redis trouble or worse: try again next round
                log.warning("redis_error", where="stalled_check", error=describe(exc))
                recovered = []
            if recovered:
                log.warning(
                    "stalled_jobs_recovered", count=len(recovered), job_ids=",".join(recovered[:20])
                )
            try:
                # Failure records of jobs that other BullMQ tools moved out of "failed".
                await self._reconciler.tick()
            except Exception as exc:  # Redis trouble or worse: try again next round
                log.warning("redis_error", where="reconcile_failures", error=describe(exc))
            if cancelled_by_worker():
                # redis-py (8.1) can swallow a cancellation that lands inside one of its
                # commands; the task is still marked as cancelled, so end it here.
                raise asyncio.CancelledError
            await asyncio.sleep(interval)
