"""The worker: takes jobs from a BullMQ queue, runs their task, and records the outcome.

Delivery is at-least-once. What happens if the process dies:
- before a job is taken: nothing was taken.
- while a job runs: its lock expires; the stalled-job check (any worker's) puts it back in wait
  and it runs again. Handlers must be idempotent.
- while finishing: each finish is one BullMQ script (atomic); a permanent failure and its
  failure record (``conveyor.jobs.FailureKeys``) are written in one MULTI, so they cannot
  disagree.

A job whose task this worker does not know is put back for another worker (see ``unknown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from conveyor._bullmq import BullQueue, JobInfo, dumps
from conveyor.backoff import capped_backoff
from conveyor.clock import now_ms
from conveyor.errors import (
    ConveyorError,
    JobLockLostError,
    PayloadValidationError,
    TaskError,
    UnknownTaskError,
    Unrecoverable,
)
from conveyor.hooks import JobEvent, NoHooks, WorkerHooks
from conveyor.jobs import (
    RetryPolicy,
    backoff_delay_ms,
    policy_from_job_options,
    should_retry,
)
from conveyor.registry import Task, TaskRegistry
from conveyor.resp import RespConnection
from conveyor.worker.reconciler import FailureReconciler
from conveyor.worker.unknown import next_deferral

log = logging.getLogger("conveyor.worker")

T = TypeVar("T")

#: How long an idle worker blocks on the queue's marker before looking again (seconds).
DRAIN_DELAY_S = 5.0
#: Shortest block. Not 1 ms: Redis before 7.0.8 turns a 0.001 s timeout into 0.999 ms, truncates
#: it to 0 and blocks for ever (BullMQ rounds up to whole seconds on those versions for the
#: same reason). 2 ms converts exactly.
MIN_BLOCK_S = 0.002
#: A due job's wake-up comes this long after its due time (BullMQ's times are whole ms).
WAKE_MARGIN_S = 0.001
#: Stack traces kept on the job hash, as Node's default stackTraceLimit.
STACKTRACE_LIMIT = 10
#: While Redis is unreachable, how long to wait between tries (seconds, doubling to the cap).
REDIS_RETRY_BASE_S = 0.1
REDIS_RETRY_CAP_S = 2.0


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker behaves; built from Settings by the service."""

    queue: str
    prefix: str = "bull"
    concurrency: int = 10
    default_policy: RetryPolicy = field(default_factory=lambda: RetryPolicy.from_retries(5))
    lock_duration_ms: int = 30_000
    stalled_interval_ms: int = 30_000
    max_stalled_count: int = 1
    failed_key_prefix: str = "failedJobs"
    job_timeout_s: float | None = None
    #: A job whose task no worker knows fails after waiting this long (see ``unknown``).
    unknown_task_timeout_s: float = 7 * 24 * 3600.0
    drain_delay_s: float = DRAIN_DELAY_S
    name: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )


class _Context:
    """The JobContext handed to handlers."""

    def __init__(self, bull: BullQueue, job: JobInfo, attempt: int) -> None:
        self._bull = bull
        self._job = job
        self._attempt = attempt

    @property
    def job_id(self) -> str:
        return self._job.id

    @property
    def name(self) -> str:
        return self._job.name

    @property
    def queue(self) -> str:
        return self._bull.name

    @property
    def attempt(self) -> int:
        return self._attempt

    async def progress(self, value: int | float | dict[str, Any]) -> None:
        await self._bull.update_progress(self._job.id, value)

    async def log(self, message: str) -> None:
        await self._bull.add_log(self._job.id, message)


def _keep(option: Any) -> dict[str, Any]:
    """BullMQ's removeOnComplete/removeOnFail as the keepJobs its scripts take."""
    if isinstance(option, bool):
        return {"count": 0} if option else {"count": -1}
    if isinstance(option, int):
        return {"count": option}
    if isinstance(option, dict):
        return option
    return {"count": -1}


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_stack(exc: BaseException) -> str:
    """The traceback as Python prints it (chained exceptions included), without the ``^^^^``
    marker lines.

    ``traceback.format_exception`` finds those markers by walking each frame's code positions
    and compiling its source line, and stats every source file on each call: most of the cost
    of a failed attempt. Here source lines come from linecache, read once per file.
    """
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        if isinstance(current, BaseExceptionGroup):  # its sub-exceptions: Python's own text
            return "".join(traceback.format_exception(exc))
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for error, link_to_next in reversed(chain):
        tb = error.__traceback__
        if tb is not None:
            parts.append("Traceback (most recent call last):\n")
        while tb is not None:
            code = tb.tb_frame.f_code
            parts.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
            line = linecache.getline(code.co_filename, tb.tb_lineno, tb.tb_frame.f_globals)
            if line.strip():
                parts.append(f"    {line.strip()}\n")
            tb = tb.tb_next
        parts.extend(traceback.format_exception_only(type(error), error))
        parts.append(link_to_next)
    return "".join(parts)


def _utf8(text: str) -> str:
    """``text`` as Redis can store it: a lone surrogate (from an undecodable file name, say)
    becomes a backslash escape instead of failing the write that records the failure."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _describe(exc: BaseException) -> str:
    """``Class: message``; just the class name when the message is empty or its ``__str__``
    raises (a hostile exception must still leave a recorded error, not a locked job)."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # any failure of a handler's __str__
        return name
    return f"{name}: {text}" if text else name


def _stack_text(exc: BaseException) -> str:
    """``format_stack``, or the class name if even traceback formatting fails on it."""
    try:
        return format_stack(exc)
    except BaseException:  # a hostile exception object
        return type(exc).__name__


def _cancelled_by_worker() -> bool:
    """Whether a CancelledError seen now comes from cancelling this task (shutdown, or the
    caller's own cancellation), as opposed to one a handler raised by itself."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


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
    ) -> None:
        self.redis = redis
        self.blocking_redis = blocking_redis
        self.registry = registry
        self.options = options
        self.hooks: WorkerHooks = hooks or NoHooks()
        self._hot_path = RespConnection.like(redis)
        self.bull = BullQueue(redis, options.queue, options.prefix, hot_path=self._hot_path)
        self.bull.worker_name = options.name
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
        self._executor = ThreadPoolExecutor(
            max_workers=options.concurrency, thread_name_prefix="conveyor-job"
        )
        self._jobs_done = 0
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
            extra={
                "fields": {
                    "queue": self.options.queue,
                    "worker": self.options.name,
                    "concurrency": self.options.concurrency,
                    "tasks": ",".join(self.registry.names()),
                }
            },
        )
        background = [
            asyncio.create_task(self._renew_locks(), name="conveyor-lock-renewal"),
            asyncio.create_task(self._check_stalled(), name="conveyor-stalled-check"),
        ]
        try:
            await self._fetch_loop()
            await self._drain(grace_s)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self._hot_path.close()
            await self._blocking.close()
            self.running = False
            log.info(
                "worker_stopped",
                extra={"fields": {"worker": self.options.name, "jobs_done": self._jobs_done}},
            )

    async def _drain(self, grace_s: float) -> None:
        if not self._active:
            return
        log.info(
            "worker_draining",
            extra={"fields": {"active": len(self._active), "grace_s": grace_s}},
        )
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
                log.warning("job_released", extra={"fields": {"job_id": job_id}})
            except (RedisError, OSError, ConveyorError) as exc:
                # The lock will expire and the stalled check will recover it.
                log.warning(
                    "job_release_failed", extra={"fields": {"job_id": job_id, "error": str(exc)}}
                )

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
                fetched = await self.bull.move_to_active(token, self.options.lock_duration_ms)
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
            timeout = self.options.drain_delay_s
            if fetched.limit_until_ms:
                timeout = min(timeout, fetched.limit_until_ms / 1000)
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
        log.warning(
            "redis_error",
            extra={"fields": {"where": where, "error": _describe(exc), "retry_in_s": delay}},
        )
        await self._until(asyncio.sleep(delay))

    def _start(self, job: JobInfo, token: str) -> None:
        self._slots += 1
        task = asyncio.create_task(self._work(job, token), name=f"conveyor-job-{job.id}")
        self._active[job.id] = (token, task)

    async def _work(self, job: JobInfo | None, token: str) -> None:
        try:
            while job is not None:
                current = job
                try:
                    job = await self._process(current, token)
                except Exception:
                    # Not a handler error (those are recorded): finishing the job failed in an
                    # unexpected way. Leave it locked; the stalled-job check recovers it.
                    log.exception("job_finish_failed", extra={"fields": {"job_id": current.id}})
                    job = None
                finally:
                    self._active.pop(current.id, None)
                if job is not None:
                    self._active[job.id] = (token, asyncio.current_task())  # type: ignore[assignment]
        finally:
            self._slots -= 1
            self._slot_freed.set()

    # --- running one job -----------------------------------------------------------------------
    def _policy(self, task: Task | None, job: JobInfo) -> RetryPolicy:
        base = self.options.default_policy
        if task is not None:
            base = task.retry_policy(base)
        try:
            return policy_from_job_options(job.options, base)
        except ConveyorError as exc:
            # E.g. a Node.js job with a custom backoff strategy: keep its attempts and use our
            # backoff rather than dropping the whole of its policy.
            log.warning(
                "job_options_unsupported", extra={"fields": {"job_id": job.id, "error": str(exc)}}
            )
            try:
                return policy_from_job_options({**job.options, "backoff": None}, base)
            except ConveyorError:
                return base

    def _max_attempts(self, task: Task | None, job: JobInfo) -> int:
        """Attempts for the log line, without building the whole policy."""
        attempts = job.options.get("attempts")
        if isinstance(attempts, int) and attempts > 0:
            return attempts
        if task is not None and task.retries is not None:
            return task.retries + 1
        return self.options.default_policy.attempts

    async def _process(self, job: JobInfo, token: str) -> JobInfo | None:
        """Run one attempt and record its outcome; answers the next job when one was fetched
        in the same call."""
        attempt = job.attempts_made + 1
        task: Task | None = None
        started = time.monotonic()
        # From the attempt's due time: a retry's or a put-back's was recorded when it was sent
        # back (a first attempt without delay, the common case, skips the look-up).
        due = job.due_ms if job.attempts_made or job.delay else job.timestamp
        wait_ms = max(0.0, now_ms() - due)
        event = JobEvent(
            job.id, job.name, self.options.queue, attempt, self._max_attempts(None, job), wait_ms
        )
        try:
            try:
                task = self.registry.get(job.name)
            except UnknownTaskError as unknown:
                if await self._put_back(job, token, event, unknown):
                    return None
                raise  # it waited long enough: it fails for good below
            if task.retries is not None:
                event = JobEvent(
                    job.id,
                    job.name,
                    self.options.queue,
                    attempt,
                    self._max_attempts(task, job),
                    wait_ms,
                )
            if job.deferred_failure:
                raise Unrecoverable(job.deferred_failure)
            try:
                payload = task.validate(job.data)
            except PayloadValidationError as exc:
                raise Unrecoverable(str(exc)) from exc
            self.hooks.job_started(event)
            result = await self._call(task, payload, _Context(self.bull, job, attempt))
            if result is None:
                return_json = "null"
            else:
                return_json = dumps(
                    result.model_dump(mode="json") if isinstance(result, BaseModel) else result
                )
                # A lone surrogate (say, a file name from os.listdir) cannot go to Redis:
                # fail the attempt here, as a handler error, not later while finishing it.
                return_json.encode()
        except BaseException as exc:
            # Whatever a handler raises (SystemExit, KeyboardInterrupt, a custom
            # BaseException, a CancelledError of its own) is one failed attempt; only a
            # cancellation of this task (shutdown) keeps its meaning. The process's own stop
            # signals never raise here: their handlers only set flags.
            if isinstance(exc, asyncio.CancelledError) and _cancelled_by_worker():
                raise
            duration = (time.monotonic() - started) * 1000
            unrecoverable = isinstance(exc, Unrecoverable | TaskError)
            # The full policy is only needed on failure (kept off the success path).
            policy = self._policy(task, job)
            return await self._failed(job, token, exc, policy, event, duration, unrecoverable)
        duration = (time.monotonic() - started) * 1000
        return await self._completed(job, token, return_json, event, duration)

    async def _put_back(
        self, job: JobInfo, token: str, event: JobEvent, unknown: UnknownTaskError
    ) -> bool:
        """Put a job of an unknown task back for another worker; False when its time is up."""
        deferral = next_deferral(job.raw, now_ms(), self.options.unknown_task_timeout_s)
        if deferral is None:
            return False
        try:
            await self._persist(
                job.id,
                lambda first: self.bull.put_back(
                    job.id, token, delay_ms=deferral.delay_ms, fields=deferral.fields
                ),
            )
        except JobLockLostError as lost:
            self._lock_lost(job, lost)
            return True
        self.hooks.job_deferred(
            replace(
                event,
                error=str(unknown),
                retry_delay_ms=deferral.delay_ms,
                deferrals=deferral.count,
            )
        )
        return True

    async def _call(self, task: Task, payload: BaseModel, ctx: _Context) -> Any:
        timeout = task.timeout_s or self.options.job_timeout_s
        if task.is_async:
            coro = task.handler(payload, ctx)
        else:
            loop = asyncio.get_running_loop()
            coro = loop.run_in_executor(self._executor, task.handler, payload, ctx)
        if timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            raise TimeoutError(f"attempt timed out after {timeout:g} s") from None

    async def _completed(
        self, job: JobInfo, token: str, return_json: str, event: JobEvent, duration_ms: float
    ) -> JobInfo | None:
        fetch_next = not self._stopping.is_set()
        try:
            fetched = await self._persist(
                job.id,
                lambda first: self.bull.complete(
                    job.id,
                    token,
                    return_json,
                    keep=_keep(job.options.get("removeOnComplete")),
                    lock_duration_ms=self.options.lock_duration_ms,
                    fetch_next=fetch_next and first,
                ),
            )
        except JobLockLostError as exc:
            self._lock_lost(job, exc)
            return None
        self._jobs_done += 1
        self.hooks.job_completed(
            JobEvent(
                event.job_id,
                event.name,
                event.queue,
                event.attempt,
                event.max_attempts,
                event.wait_ms,
                duration_ms,
            )
        )
        if fetched is None or fetched.job is None:
            return None
        return fetched.job

    async def _failed(
        self,
        job: JobInfo,
        token: str,
        exc: BaseException,
        policy: RetryPolicy,
        event: JobEvent,
        duration_ms: float,
        unrecoverable: bool,
    ) -> JobInfo | None:
        """Record a failed attempt (retry later, or fail for good with its failure record);
        answers the next job when the final failure fetched one."""
        error = _utf8(_describe(exc))
        stack = [*job.stacktrace, _utf8(_stack_text(exc))][-STACKTRACE_LIMIT:]
        attempt = job.attempts_made + 1
        done = replace(event, max_attempts=policy.attempts, duration_ms=duration_ms, error=error)
        try:
            if should_retry(attempt, policy, unrecoverable=unrecoverable):
                delay = backoff_delay_ms(attempt, policy)
                await self._persist(
                    job.id,
                    lambda first: self.bull.retry_later(
                        job.id,
                        token,
                        delay_ms=delay,
                        error=error,
                        stacktrace=stack,
                        lifo=bool(job.options.get("lifo")),
                    ),
                )
                self.hooks.job_retrying(replace(done, retry_delay_ms=delay))
                return None
            failed_at = datetime.now(UTC)
            fetch_next = not self._stopping.is_set()
            fetched = await self._persist(
                job.id,
                lambda first: self.bull.fail(
                    job,
                    token,
                    error=error,
                    stacktrace=stack,
                    attempts=policy.attempts,
                    keep=_keep(job.options.get("removeOnFail")),
                    lock_duration_ms=self.options.lock_duration_ms,
                    records=self._records,
                    failed_at_iso=failed_at.isoformat(timespec="milliseconds").replace(
                        "+00:00", "Z"
                    ),
                    failed_at_ms=int(failed_at.timestamp() * 1000),
                    fetch_next=fetch_next and first,
                ),
            )
        except JobLockLostError as lost:
            self._lock_lost(job, lost)
            return None
        self._jobs_done += 1
        self.hooks.job_failed(done)
        return fetched.job if fetched is not None else None

    async def _persist(
        self, job_id: str, call: Callable[[bool], Coroutine[Any, Any, T]]
    ) -> T | None:
        """Run a finishing call, retrying through Redis outages while our lock can still be
        valid; after that the stalled check owns the job (it will run again).

        ``call(first)``: a retry must not fetch a next job. The first try may have run with
        its reply lost; a job fetched then is locked by us and would sit unseen until the
        stalled check, counting a stall against a job that never ran."""
        deadline = time.monotonic() + self.options.lock_duration_ms / 1000
        failures = 0
        while True:
            try:
                return await call(failures == 0)
            except (RedisError, OSError) as exc:
                failures += 1
                if time.monotonic() > deadline:
                    log.error(
                        "job_finish_abandoned",
                        extra={"fields": {"job_id": job_id, "error": _describe(exc)}},
                    )
                    return None
                delay = capped_backoff(failures, REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S)
                log.warning(
                    "redis_error",
                    extra={
                        "fields": {"where": "finish", "job_id": job_id, "error": _describe(exc)}
                    },
                )
                await asyncio.sleep(delay)

    def _lock_lost(self, job: JobInfo, exc: BaseException) -> None:
        log.warning(
            "job_lock_lost",
            extra={"fields": {"job_id": job.id, "name": job.name, "error": str(exc)}},
        )

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
                log.warning(
                    "redis_error",
                    extra={"fields": {"where": "renew_locks", "error": _describe(exc)}},
                )
                continue
            for job_id in lost:
                log.warning("job_lock_renewal_failed", extra={"fields": {"job_id": job_id}})

    async def _check_stalled(self) -> None:
        interval = self.options.stalled_interval_ms / 1000
        while True:
            try:
                recovered = await self.bull.recover_stalled(
                    self.options.max_stalled_count, self.options.stalled_interval_ms
                )
            except Exception as exc:  # Redis trouble or worse: try again next round
                log.warning(
                    "redis_error",
                    extra={"fields": {"where": "stalled_check", "error": _describe(exc)}},
                )
                recovered = []
            if recovered:
                log.warning(
                    "stalled_jobs_recovered",
                    extra={
                        "fields": {"count": len(recovered), "job_ids": ",".join(recovered[:20])}
                    },
                )
            try:
                # Failure records of jobs that other BullMQ tools moved out of "failed".
                await self._reconciler.tick()
            except Exception as exc:  # Redis trouble or worse: try again next round
                log.warning(
                    "redis_error",
                    extra={"fields": {"where": "reconcile_failures", "error": _describe(exc)}},
                )
            if _cancelled_by_worker():
                # redis-py (8.1) can swallow a cancellation that lands inside one of its
                # commands; the task is still marked as cancelled, so end it here.
                raise asyncio.CancelledError
            await asyncio.sleep(interval)
