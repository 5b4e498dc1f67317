"""QueueClient: enqueue jobs and look after them, from Python (the API and monitor use it too)."""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor import keys
from conveyor._bullmq import (
    RESERVED_JOB_IDS,
    BullQueue,
    FlowState,
    JobRecord,
    dumps,
    is_job_id,
)
from conveyor._bullmq.cancel import (
    MAX_BY_LENGTH,
    MAX_REASON_LENGTH,
    CancelOutcome,
    CancelRequest,
    CancelResult,
)
from conveyor.clock import now_ms
from conveyor.config import Settings, load_settings
from conveyor.embedded import running_url
from conveyor.errors import (
    JobNotFoundError,
    JobOptionsError,
    JobStateError,
    RedisUnavailableError,
)
from conveyor.hashtag import queue_route_key
from conveyor.jobs import COUNTED_STATES, JobState
from conveyor.limits import QueueLimits
from conveyor.policy import (
    DEFAULT_POLICY,
    RetryPolicy,
    check_job_id,
    check_option_limits,
    max_attempts,
)
from conveyor.redis import connect
from conveyor.registry import TaskRegistry
from conveyor.replication import RECEIPT_TTL_MS, ReplicaAck
from conveyor.resp import RespConnection


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue."""

    name: str
    data: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetriedFailed:
    """What ``retry_all_failed`` did."""

    #: Jobs sent back to wait.
    retried: int
    #: Members of the failed set with no job hash: nothing to retry, left as they are.
    orphans: list[str]


@dataclass(frozen=True)
class JobView:
    """A job with its current state."""

    info: JobRecord
    state: JobState

    @property
    def id(self) -> str:
        return self.info.id


#: A version-4 UUID's version nibble and variant bits, and the masks that clear them.
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))


def new_job_id() -> str:
    """A new random job id: a version-4 UUID as ``str(uuid.uuid4())`` writes it (the same
    ``os.urandom`` bits), without building a ``uuid.UUID`` (a third of the time; an enqueue
    makes one per job)."""
    value = (int.from_bytes(os.urandom(16)) & _UUID4_CLEAR) | _UUID4_SET
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_options(
    options: dict[str, Any] | None, default_policy: RetryPolicy, *, job_id: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Check a caller's BullMQ job options and complete them with the defaults.

    Answers the job id (the caller's ``jobId``, else a new UUID, so ids never collide across
    queues) and the options to store. Raises JobOptionsError, before anything touches Redis.
    """
    if not options and job_id is None:
        # No options (most jobs): nothing to check, the policy's own options and a new id,
        # as the general path below would answer them.
        final_id = new_job_id()
        return final_id, {**default_policy.to_job_options(), "jobId": final_id}
    opts = dict(options or {})
    policy = check_option_limits(opts, default_policy)
    opts.update(policy.to_job_options())
    given_id = opts.get("jobId", job_id)
    if given_id is not None:
        check_job_id(given_id)
        if given_id in RESERVED_JOB_IDS:
            raise JobOptionsError(
                f"options.jobId {given_id!r} is the name of one of the queue's own keys; "
                f"reserved: {', '.join(sorted(RESERVED_JOB_IDS))}"
            )
    final_id = given_id or new_job_id()
    opts["jobId"] = final_id
    for key in ("delay", "priority"):
        if not opts.get(key):
            opts.pop(key, None)
    return final_id, opts


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def stored_payload(model: BaseModel, given: Any) -> str:
    """The JSON stored for a payload its task's model accepted: the model's validated values
    (the fields that were given, by alias), so the stored JSON matches the task's published
    schema (``"5"`` for an int field is stored as ``5``) and a Node.js consumer reads what the
    Python handler gets. Encoded once, by pydantic-core; NaN and Infinity stay refused
    (pydantic would write them as null)."""
    if not _finite(given):
        raise JobOptionsError("job data must be JSON (no NaN or Infinity)")
    try:
        # model_dump_json's own call, without its wrapper (a job's JSON is made on every enqueue)
        encoded: bytes = model.__pydantic_serializer__.to_json(
            model, by_alias=True, exclude_unset=True, round_trip=True
        )
        return encoded.decode()
    except ValueError as exc:
        raise JobOptionsError(f"job data must be JSON: {exc}") from exc


def encode_data(data: Any) -> str:
    try:
        return dumps(data if data is not None else {})
    except (TypeError, ValueError) as exc:
        raise JobOptionsError(f"job data must be JSON (no NaN or Infinity): {exc}") from exc


class QueueClient:
    """Enqueue and manage jobs of one queue.

    With a ``registry``, every job is checked before it is sent: an unknown task or a payload
    that fails its model raises and enqueues nothing.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        queue: str,
        prefix: str = "bull",
        registry: TaskRegistry | None = None,
        default_policy: RetryPolicy | None = None,
        failed_key_prefix: str = "failedJobs",
        owns_redis: bool = False,
        pipelined: bool = True,
        replica_ack: ReplicaAck | None = None,
    ) -> None:
        self.redis = redis
        #: Answer an enqueue only once this many replicas hold it (conveyor.replication).
        self.replica_ack = replica_ack
        self.queue = queue
        self.registry = registry
        self.default_policy = default_policy or DEFAULT_POLICY
        self.failed_key_prefix = failed_key_prefix
        # Single script calls (enqueue, state, retry...) made in the same event-loop tick share
        # one write on a lean pipelined connection of their own (the worker's hot path): many
        # concurrent enqueues cost a few round trips, not one each; an enqueue made while
        # nothing is in flight is written at once (AutoPipeline.call's eager). Closed by close().
        self._hot_path = RespConnection.like(redis) if pipelined else None
        self.bull = BullQueue(redis, queue, prefix, hot_path=self._hot_path)
        #: This queue's failure records (``conveyor.keys.FailureKeys`` says where they live).
        self.records = self.bull.failure_store(failed_key_prefix)
        self._owns_redis = owns_redis

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        redis_url: str | None = None,
        registry: TaskRegistry | None = None,
        *,
        redis: Redis | None = None,
        queue: str | None = None,
        pipelined: bool = True,
    ) -> QueueClient:
        """A client for the settings' queue, prefix, retry policy and failure-record keys.

        ``settings`` default to the environment's (``load_settings()``, the CONVEYOR_*
        variables the commands read). With ``redis``, the client uses that connection pool
        and leaves it open; otherwise it opens its own (closed by ``close()``) to
        ``redis_url``, else the settings' URL, else the embedded Redis that ``conveyor``
        commands run for ``settings.data_dir`` (raises RedisUnavailableError when none is
        running). ``queue`` names another queue than the settings'; ``pipelined=False``
        keeps every call on the pool (see ``__init__``)."""
        settings = settings if settings is not None else load_settings()
        owns_redis = redis is None
        if redis is None:
            url = redis_url or settings.redis_url or running_url(settings.data_dir)
            if url is None:
                raise RedisUnavailableError(
                    f"CONVEYOR_REDIS_URL is not set and no embedded Redis is running for "
                    f"{settings.data_dir.resolve()}: start `conveyor worker` or `conveyor up` "
                    f"from this folder first, or set CONVEYOR_REDIS_URL"
                )
            sentinel_password = settings.redis_sentinel_password
            redis = connect(
                url,
                timeout_s=settings.redis_timeout_s,
                sentinel_password=sentinel_password.get_secret_value()
                if sentinel_password
                else None,
                route_key=queue_route_key(settings.prefix, queue or settings.queue),
            )
        elif redis_url is not None:
            raise ValueError("QueueClient.from_settings: pass redis or redis_url, not both")
        return cls(
            redis,
            queue=queue if queue is not None else settings.queue,
            prefix=settings.prefix,
            registry=registry,
            default_policy=settings.retry_policy,
            failed_key_prefix=settings.failed_key_prefix,
            owns_redis=owns_redis,
            pipelined=pipelined,
            replica_ack=ReplicaAck.from_settings(settings),
        )

    async def close(self) -> None:
        if self._hot_path is not None:
            await self._hot_path.close()
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> QueueClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- enqueue -----------------------------------------------------------------------------
    def prepare(self, spec: JobSpec) -> tuple[str, str, dict[str, Any]]:
        """Validate one job and compute what will be stored: (job id, data JSON, options)."""
        return self._prepare(spec.name, spec.data, spec.options)

    def _prepare(
        self, name: str, data: Any, options: dict[str, Any] | None
    ) -> tuple[str, str, dict[str, Any]]:
        policy = self.default_policy
        if self.registry is not None:
            task = self.registry.get(name)
            data_json = stored_payload(task.validate(data), data)
            policy = task.retry_policy(policy)
        elif not isinstance(name, str) or not name:
            raise JobOptionsError("a job needs a name")
        else:
            data_json = encode_data(data)
        job_id, opts = build_options(options, policy)
        return job_id, data_json, opts

    async def enqueue(
        self, name: str, data: Any = None, options: dict[str, Any] | None = None
    ) -> str:
        """Add one job; answers its id once Redis has it."""
        job_id, data_json, opts = self._prepare(name, data, options)
        if self.replica_ack is not None:
            return await self._enqueue_acknowledged(self.replica_ack, job_id, name, data_json, opts)
        stored = await self.bull.add_job(job_id, name, data_json, opts)
        return str(stored)

    async def _enqueue_acknowledged(
        self, ack: ReplicaAck, job_id: str, name: str, data_json: str, opts: dict[str, Any]
    ) -> str:
        """The add and its WAIT on one connection (ReplicationError when too few replicas)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            await self.bull.add_job(job_id, name, data_json, opts, pipe=pipe)
            pipe.execute_command(*ack.command())
            stored, acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(stored, Exception):
            raise stored
        ack.check(acknowledged)
        return str(stored)

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[str]:
        """Add many jobs in one round trip, all or nothing (one MULTI); validated first."""
        prepared = [(spec.name, *self.prepare(spec)) for spec in specs]
        ids = [job_id for _, job_id, _, _ in prepared]
        if len(set(ids)) != len(ids):
            raise JobOptionsError("the same jobId appears twice in one bulk request")
        if not prepared:
            return []
        ack = self.replica_ack
        if ack is None and self._hot_path is not None:  # the MULTI packed and parsed in C
            jobs = [(job_id, name, data_json, opts) for name, job_id, data_json, opts in prepared]
            return [str(s) for s in await self.bull.add_jobs_atomically(None, jobs)]
        receipt = keys.bulk_receipt(self.bull.prefix, self.queue, uuid.uuid4().hex) if ack else ""
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, job_id, data_json, opts in prepared:
                await self.bull.add_job(job_id, name, data_json, opts, pipe=pipe)
            if ack is not None:
                pipe.set(receipt, 1, px=RECEIPT_TTL_MS)
            stored = await pipe.execute()
        if ack is not None:
            await ack.confirm(self.redis, receipt)
        return [str(s) for s in stored[: len(prepared)]]

    # --- look ----------------------------------------------------------------------------------
    def _check_id(self, job_id: str) -> None:
        """JobNotFoundError, before anything touches Redis, for an id that cannot name a job
        (one of the queue's own key names, an id with ``:``): those keys are not jobs."""
        if not is_job_id(job_id):
            raise JobNotFoundError(job_id, self.queue)

    async def find_job(self, job_id: str) -> JobRecord | None:
        """The job ``job_id`` names, or None (also for ids that cannot name a job)."""
        if not is_job_id(job_id):
            return None
        return await self.bull.get_job(job_id)

    async def get_job(self, job_id: str) -> JobView:
        self._check_id(job_id)
        info, state = await self.bull.get_job_with_state(job_id)
        if info is None:
            raise JobNotFoundError(job_id, self.queue)
        return JobView(info=info, state=state)

    def max_attempts(self, info: JobRecord) -> int:
        """The attempts a worker gives this job (``conveyor.policy``): its own ``attempts``,
        else its task's (when this client's registry knows the task), else this client's
        default policy's. A Node.js job without ``attempts`` gets Conveyor's, not Node's 1."""
        task = None
        if self.registry is not None and info.name in self.registry:
            task = self.registry.get(info.name)
        return max_attempts(info.options, self.default_policy, task)

    async def get_state(self, job_id: str) -> JobState:
        if not is_job_id(job_id):
            return JobState.UNKNOWN
        return await self.bull.get_state(job_id)

    async def counts(self) -> dict[JobState, int]:
        return await self.bull.get_counts(list(COUNTED_STATES))

    async def list_jobs(
        self, state: JobState, start: int = 0, end: int = 49, *, ascending: bool = False
    ) -> list[JobRecord]:
        ids = await self.bull.get_range([state], start, end, ascending=ascending)
        return await self.bull.get_jobs(ids)

    async def job_logs(self, job_id: str) -> list[str]:
        self._check_id(job_id)
        return await self.bull.get_logs(job_id)

    async def failure_record(self, job_id: str) -> dict[str, str] | None:
        """The record of a permanently failed job, if any: ``failedJobs:{jobId}`` on the seed's
        queue, ``{prefix}:{queue}:conveyor:failed:{jobId}`` on any other (see
        ``conveyor.keys.FailureKeys``); a record an earlier version wrote is found too."""
        if not is_job_id(job_id):
            return None
        return await self.records.read(job_id)

    # --- act ------------------------------------------------------------------------------------
    async def retry(self, job_id: str) -> None:
        """Run a failed (or completed) job again, with its attempts reset."""
        state = await self.get_state(job_id)
        if state not in (JobState.FAILED, JobState.COMPLETED):
            if state is JobState.UNKNOWN:
                raise JobNotFoundError(job_id, self.queue)
            raise JobStateError(
                f"job {job_id} is {state.value}; only failed or completed jobs can be retried"
            )
        await self.bull.reprocess(
            job_id,
            state,
            records=self.records,
        )

    async def retry_all_failed(self, *, batch: int = 1000) -> RetriedFailed:
        """Send the failed jobs back to wait, oldest first, ``batch`` ids per read.

        Bounded: it looks at no more entries than the failed set held when it began (jobs that
        fail again meanwhile wait for the next call). An entry with no job hash (an orphan,
        which BullMQ's retry cannot move) is left where it is and reported, as are entries
        whose job is in another state by now.
        """
        budget = await self.redis.zcard(self.bull.keys["failed"])
        retried, kept, seen = 0, 0, 0
        orphans: list[str] = []
        while seen < budget:
            ids = await self.bull.get_range(
                [JobState.FAILED], kept, kept + min(batch, budget - seen) - 1, ascending=True
            )
            if not ids:
                break
            for job_id in ids:
                seen += 1
                try:
                    await self.retry(job_id)
                    retried += 1
                except JobStateError:
                    kept += 1
                except JobNotFoundError:
                    if await self.redis.zscore(self.bull.keys["failed"], job_id) is not None:
                        kept += 1
                        orphans.append(job_id)
        return RetriedFailed(retried=retried, orphans=orphans)

    async def remove(self, job_id: str) -> None:
        """Remove a job that is not running (waiting, delayed, finished) and its record."""
        self._check_id(job_id)
        if await self.bull.get_job(job_id) is None:
            raise JobNotFoundError(job_id, self.queue)
        removed = await self.bull.remove(
            job_id,
            records=self.records,
        )
        if not removed:
            raise JobStateError(f"job {job_id} is locked by a worker and cannot be removed now")

    async def cancel(
        self, job_id: str, reason: str | None = None, *, by: str | None = None
    ) -> CancelResult:
        """Cancel a job: one not running yet is failed now (``CancelOutcome.CANCELLED``); a
        running one is stopped by its worker, on any host, within a second and then failed
        (``MARKED``; ``result.stopping``). Either way it ends failed, not retried, its
        failedReason ``JobCancelled: cancelled by {by}: {reason}``, with its failure record.
        Idempotent (``PENDING``, ``DONE``). ``by`` defaults to this host and process.

        Raises JobNotFoundError, JobStateError for a completed job or one that failed for
        another reason, JobOptionsError for a reason or ``by`` over its length (nothing is
        written then)."""
        self._check_id(job_id)
        who = by if by is not None else f"{socket.gethostname()} pid {os.getpid()}"
        for label, value, limit in (
            ("reason", reason or "", MAX_REASON_LENGTH),
            ("by", who, MAX_BY_LENGTH),
        ):
            if not isinstance(value, str) or len(value) > limit:
                raise JobOptionsError(
                    f"cancel {label} must be a string of at most {limit} characters"
                )
        request = CancelRequest(by=who or "unknown", reason=reason or "", at_ms=now_ms())
        failed_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        result = await self.bull.cancel(
            job_id, request, records=self.records, failed_at_iso=failed_at
        )
        if result.outcome is CancelOutcome.MISSING:
            raise JobNotFoundError(job_id, self.queue)
        if result.outcome is CancelOutcome.CONFLICT:
            raise JobStateError(
                f"job {job_id} is {result.state.value}; only a job that is waiting, delayed or "
                "running can be cancelled"
            )
        return result

    async def pause(self) -> None:
        await self.bull.pause(True)

    async def resume(self) -> None:
        await self.bull.pause(False)

    async def is_paused(self) -> bool:
        return await self.bull.is_paused()

    # --- flow control (docs/flow-control.md) ---------------------------------------------------
    async def get_limits(self) -> QueueLimits:
        """The queue-wide rate limit and concurrency (BullMQ's, whoever set them)."""
        return await self.bull.get_limits()

    async def set_limits(self, limits: QueueLimits) -> QueueLimits:
        """Set (or, with None, remove) both queue-wide limits at once, in BullMQ's format, so
        Node workers obey them too; answers them as Redis now holds them."""
        await self.bull.set_limits(limits)
        return await self.bull.get_limits()

    async def flow_state(self) -> FlowState:
        """The limits and whether they hold the queue back right now."""
        return await self.bull.flow_state()
