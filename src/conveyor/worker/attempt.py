"""One attempt of one job: run its task's handler (with its timeout, in a thread when it is
sync, whatever it raises captured), then record the outcome: completed, retried later, failed
for good with its failure record, or put back for a worker that knows its task.

The retry policy of an attempt is decided in one place, ``Attempts.policy`` (and its cheap
cousin ``Attempts.max_attempts`` for the log line of a success).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel
from redis.exceptions import RedisError

from conveyor._bullmq import BullQueue, JobRecord, dumps
from conveyor._bullmq.cancel import CancelRequest, carries_cancel
from conveyor.backoff import capped_backoff
from conveyor.clock import IsoStamps, now_ms
from conveyor.errors import (
    JobCancelled,
    JobLockLostError,
    PayloadValidationError,
    RateLimited,
    TaskError,
    UnknownTaskError,
    Unrecoverable,
)
from conveyor.failures import FailureStore
from conveyor.hooks import JobEvent, WorkerHooks
from conveyor.limits import hold_ms
from conveyor.log import get_logger
from conveyor.policy import (
    RetryPolicy,
    backoff_delay_ms,
    effective_policy,
    max_attempts,
    should_retry,
)
from conveyor.registry import Task, TaskRegistry
from conveyor.worker.cancel import CancelWatch, cancelled_error, refuse_cancelled
from conveyor.worker.options import REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S, WorkerOptions
from conveyor.worker.schedules import ScheduleRuns
from conveyor.worker.slots import StopFlag
from conveyor.worker.stack import FrameTexts, describe, stack_text, utf8
from conveyor.worker.task_limits import put_back_delay_ms
from conveyor.worker.unknown import next_deferral

log = get_logger("conveyor.worker")

T = TypeVar("T")

#: Stack traces kept on the job hash, as Node's default stackTraceLimit.
STACKTRACE_LIMIT = 10


class _Context:
    """The JobContext handed to handlers."""

    #: Set by the worker's CancelWatch when the job is cancelled.
    cancel_request: CancelRequest | None = None

    def __init__(self, bull: BullQueue, job: JobRecord, attempt: int) -> None:
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

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled: a sync handler polls it and returns (or raises)."""
        return self.cancel_request is not None

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


def cancelled_by_worker() -> bool:
    """Whether a CancelledError seen now comes from cancelling this task (shutdown, or the
    caller's own cancellation), as opposed to one a handler raised by itself."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class Attempts:
    """Runs attempts of a worker's jobs and records their outcomes.

    ``stopping`` is the worker's (or, sharing a slot pool, ``slots.YieldingStop``): once set,
    finishing a job no longer fetches the next one."""

    def __init__(
        self,
        bull: BullQueue,
        registry: TaskRegistry,
        options: WorkerOptions,
        hooks: WorkerHooks,
        records: FailureStore,
        stopping: StopFlag,
    ) -> None:
        self.bull = bull
        self.registry = registry
        self.options = options
        self.hooks = hooks
        self._records = records
        self._stopping = stopping
        #: Sync handlers run here, so they never block lock renewal.
        self._executor = ThreadPoolExecutor(
            max_workers=options.concurrency, thread_name_prefix="conveyor-job"
        )
        #: Jobs finished (completed or failed for good) by this worker.
        self.jobs_done = 0
        #: The handlers running now, stopped when their job is cancelled (its ``run`` loop is
        #: one of the worker's background tasks).
        self.cancels = CancelWatch(bull)
        self._schedules = ScheduleRuns(bull, options.lock_duration_ms)
        #: The traceback entries of failed attempts, formatted once (``stack.FrameTexts``).
        self._frames = FrameTexts()
        self._stamps = IsoStamps()

    def close(self) -> None:
        """Stop the thread pool; a sync handler still running is abandoned, not waited for."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the retry policy ----------------------------------------------------------------------
    def policy(self, task: Task | None, job: JobRecord) -> RetryPolicy:
        policy, problem = effective_policy(job.options, self.options.default_policy, task)
        if problem is not None:
            # E.g. a Node.js job with a custom backoff strategy: it keeps its attempts and
            # runs with our backoff (conveyor.policy.effective_policy).
            log.warning("job_options_unsupported", job_id=job.id, error=str(problem))
        return policy

    def max_attempts(self, task: Task | None, job: JobRecord) -> int:
        """Attempts for the log line, without building the whole policy."""
        return max_attempts(job.options, self.options.default_policy, task)

    # --- one attempt ---------------------------------------------------------------------------
    async def run(self, job: JobRecord, token: str) -> JobRecord | None:
        """Run one attempt and record its outcome; answers the next job when one was fetched
        in the same call."""
        if job.repeat_key is not None:  # a schedule's job: its next run first, as BullMQ
            await self._schedules.taken(job)
        attempt = job.attempts_made + 1
        task: Task | None = None
        started = time.monotonic()
        # From the attempt's due time: a retry's or a put-back's was recorded when it was sent
        # back (a first attempt without delay, the common case, skips the look-up).
        due = job.due_ms if job.attempts_made or job.delay else job.timestamp
        wait_ms = max(0.0, now_ms() - due)
        event = JobEvent(
            job.id, job.name, self.options.queue, attempt, self.max_attempts(None, job), wait_ms
        )
        try:
            if carries_cancel(job):
                await refuse_cancelled(self.bull, job)
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
                    self.max_attempts(task, job),
                    wait_ms,
                )
            if task.limited and await self._task_limited(job, token, task):
                return None
            if job.deferred_failure:
                raise Unrecoverable(job.deferred_failure)
            try:
                payload = task.validate(job.data)
            except PayloadValidationError as exc:
                raise Unrecoverable(str(exc)) from exc
            self.hooks.job_started(event)
            ctx = _Context(self.bull, job, attempt)
            self.cancels.started(job.id, ctx)
            result = await self._call(task, payload, ctx)
            request = self.cancels.ended(job.id)
            if request is not None:  # the handler swallowed its CancelledError
                raise cancelled_error(request) or asyncio.CancelledError()
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
            request = self.cancels.ended(job.id)
            if request is not None:
                cancelled = cancelled_error(request)
                if cancelled is None:
                    raise  # shutting down too: the job goes back, to fail when taken again
                cancelled.__context__ = exc  # its stack shows where the handler was stopped
                exc = cancelled
            elif isinstance(exc, asyncio.CancelledError) and cancelled_by_worker():
                raise
            duration = (time.monotonic() - started) * 1000
            unrecoverable = isinstance(exc, Unrecoverable | TaskError)
            # The full policy is only needed on failure (kept off the success path).
            policy = self.policy(task, job)
            return await self._failed(job, token, exc, policy, event, duration, unrecoverable)
        duration = (time.monotonic() - started) * 1000
        return await self._completed(job, token, return_json, event, duration)

    async def _put_back(
        self, job: JobRecord, token: str, event: JobEvent, unknown: UnknownTaskError
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

    async def _task_limited(self, job: JobRecord, token: str, task: Task) -> bool:
        """A per-task limit (``task_limits``): take the task's slot, or put the job back for
        later without spending an attempt (then True)."""
        reply = await self.bull.take_task_slot(job.id, task.name, task.rate_limit, task.concurrency)
        delay_ms = put_back_delay_ms(reply)
        if delay_ms is None:
            return False
        try:
            await self._persist(
                job.id,
                lambda first: self.bull.put_back(job.id, token, delay_ms=delay_ms, fields={}),
            )
        except JobLockLostError as lost:
            self._lock_lost(job, lost)
        log.debug("job_task_limited", job_id=job.id, name=job.name, retry_in_ms=delay_ms)
        return True

    async def _rate_limited(self, job: JobRecord, token: str, exc: RateLimited) -> None:
        """BullMQ's manual rate limit: hold the queue, and the job back to wait unattempted."""
        ms = hold_ms(exc.retry_after_s)
        try:
            held = await self._persist(
                job.id, lambda first: self.bull.hold_and_release(job.id, token, ms)
            )
        except JobLockLostError as lost:
            self._lock_lost(job, lost)
            return
        log.warning("job_rate_limited", job_id=job.id, name=job.name, hold_ms=held or ms)

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

    # --- recording the outcome -----------------------------------------------------------------
    async def _completed(
        self, job: JobRecord, token: str, return_json: str, event: JobEvent, duration_ms: float
    ) -> JobRecord | None:
        fetch_next = not self._stopping.is_set()
        try:
            fetched = await self._persist(
                job.id,
                lambda first: self.bull.complete(
                    job.id,
                    token,
                    return_json,
                    keep=_keep(job.remove_on_complete),
                    lock_duration_ms=self.options.lock_duration_ms,
                    fetch_next=fetch_next and first,
                ),
            )
        except JobLockLostError as exc:
            self._lock_lost(job, exc)
            return None
        self.jobs_done += 1
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
        job: JobRecord,
        token: str,
        exc: BaseException,
        policy: RetryPolicy,
        event: JobEvent,
        duration_ms: float,
        unrecoverable: bool,
    ) -> JobRecord | None:
        """Record a failed attempt (retry later, or fail for good with its failure record);
        answers the next job when the final failure fetched one."""
        if isinstance(exc, RateLimited):  # not a failure: BullMQ's manual rate limit
            await self._rate_limited(job, token, exc)
            return None
        error = utf8(describe(exc))
        stack = [*job.stacktrace, utf8(stack_text(exc, self._frames))][-STACKTRACE_LIMIT:]
        attempt = job.attempts_made + 1
        retry = should_retry(attempt, policy, unrecoverable=unrecoverable)
        delay = backoff_delay_ms(attempt, policy) if retry else None
        # One event for the hooks, built directly (dataclasses.replace costs twice as much).
        done = JobEvent(
            event.job_id,
            event.name,
            event.queue,
            event.attempt,
            policy.attempts,
            event.wait_ms,
            duration_ms,
            error,
            delay,
        )
        try:
            if delay is not None:
                await self._persist(
                    job.id,
                    lambda first: self.bull.retry_later(
                        job.id,
                        token,
                        delay_ms=delay,
                        error=error,
                        stacktrace=stack,
                        lifo=job.lifo,
                    ),
                )
                self.hooks.job_retrying(done)
                return None
            failed_at_ms = int(time.time() * 1000)
            fetch_next = not self._stopping.is_set()
            also = [self.bull.cancel_done_call(job)] if isinstance(exc, JobCancelled) else []
            fetched = await self._persist(
                job.id,
                lambda first: self.bull.fail(
                    job,
                    token,
                    error=error,
                    stacktrace=stack,
                    attempts=policy.attempts,
                    keep=_keep(job.remove_on_fail),
                    lock_duration_ms=self.options.lock_duration_ms,
                    records=self._records,
                    failed_at_iso=self._stamps.at(failed_at_ms),
                    failed_at_ms=failed_at_ms,
                    fetch_next=fetch_next and first,
                    also=also,
                ),
            )
        except JobLockLostError as lost:
            self._lock_lost(job, lost)
            return None
        self.jobs_done += 1
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
                    log.error("job_finish_abandoned", job_id=job_id, error=describe(exc))
                    return None
                delay = capped_backoff(failures, REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S)
                log.warning("redis_error", where="finish", job_id=job_id, error=describe(exc))
                await asyncio.sleep(delay)

    def _lock_lost(self, job: JobRecord, exc: BaseException) -> None:
        log.warning("job_lock_lost", job_id=job.id, name=job.name, error=str(exc))
