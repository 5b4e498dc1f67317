"""The API's wire shapes: what requests carry and what responses answer.

Job options are in BullMQ's own words (camelCase), so a Node.js BullMQ user recognises them;
everything Conveyor answers is snake_case.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    field_validator,
)

from conveyor._bullmq import RESERVED_JOB_IDS, JobRecord
from conveyor._bullmq.cancel import MAX_REASON_LENGTH as MAX_CANCEL_REASON_LENGTH
from conveyor.jobs import JobState
from conveyor.policy import (
    MAX_ATTEMPTS,
    MAX_BACKOFF_MS,
    MAX_DEDUPLICATION_ID_LENGTH,
    MAX_DELAY_MS,
    MAX_JOB_ID_LENGTH,
    MAX_KEEP,
    MAX_PRIORITY,
)

#: Longest accepted task name and Idempotency-Key header.
MAX_TASK_NAME_LENGTH = 256
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_QUEUE_NAME_LENGTH = 256


def _whole(value: Any) -> Any:
    """JSON Schema's integers include 2.0: accept a float with no fraction as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Whole numbers: a JSON integer, or a number with no fraction; never a string or a bool.
#: Every limit is ``conveyor.policy``'s, which the client checks too, so the published schema,
#: the API and Python callers agree.
KeepCount = Annotated[int, Ge(0), Le(MAX_KEEP), BeforeValidator(_whole)]
Priority = Annotated[int, Ge(0), Le(MAX_PRIORITY), BeforeValidator(_whole)]
Attempts = Annotated[int, Ge(1), Le(MAX_ATTEMPTS), BeforeValidator(_whole)]
JobDelayMs = Annotated[int, Ge(0), Le(MAX_DELAY_MS), BeforeValidator(_whole)]
#: A backoff delay, whether written as a number or as ``{type, delay}``.
BackoffMs = Annotated[int, Ge(0), Le(MAX_BACKOFF_MS), BeforeValidator(_whole)]

#: Options that take one of several forms. Each form has a tag (picked by the value's JSON
#: type) that pydantic puts in error locations after the option's name; problems drop it.
UNION_OPTIONS = frozenset({"backoff", "removeOnComplete", "removeOnFail"})


def _backoff_form(value: Any) -> str:
    return "object" if isinstance(value, dict | BaseModel) else "ms"


def _keep_form(value: Any) -> str:
    if isinstance(value, bool):
        return "flag"
    return "object" if isinstance(value, dict | BaseModel) else "count"


class _Strict(BaseModel):
    """Request models: unknown fields and type coercions are errors, not guesses."""

    model_config = ConfigDict(extra="forbid", strict=True)


class BackoffOptions(_Strict):
    """How long to wait between attempts: ``delay`` ms, doubled each time when exponential."""

    type: Literal["exponential", "fixed"] = "exponential"
    delay: BackoffMs = Field(default=1000, description="Base delay (ms).")


class KeepJobs(_Strict):
    """Keep finished jobs up to an age (seconds) and/or a count (BullMQ's KeepJobs)."""

    age: KeepCount | None = Field(default=None, description="Seconds to keep a finished job.")
    count: KeepCount | None = Field(default=None, description="Finished jobs to keep at most.")


Backoff = Annotated[
    Annotated[BackoffMs, Tag("ms")] | Annotated[BackoffOptions, Tag("object")],
    Discriminator(_backoff_form),
]
Keep = Annotated[
    Annotated[bool, Tag("flag")]
    | Annotated[KeepCount, Tag("count")]
    | Annotated[KeepJobs, Tag("object")],
    Discriminator(_keep_form),
]


class Deduplication(_Strict):
    """BullMQ's deduplication: while a job added with this ``id`` is still there (simple
    mode, no ``ttl``) or for ``ttl`` ms (throttle), adding another with the same ``id`` adds
    nothing and answers the first job's id. ``extend`` restarts the ttl at each duplicate;
    ``replace`` (with a ``delay``: debounce) swaps in the newest job while the first is still
    delayed; ``keepLastIfActive`` keeps the newest duplicate of a running job for after it."""

    id: str = Field(
        min_length=1, max_length=MAX_DEDUPLICATION_ID_LENGTH, description="Deduplication key."
    )
    ttl: JobDelayMs | None = Field(
        default=None, description="Milliseconds the id stays taken (unset: while the job lives)."
    )
    extend: bool | None = Field(default=None, description="A duplicate restarts the ttl.")
    replace: bool | None = Field(
        default=None, description="A duplicate replaces the first job while it is delayed."
    )
    keepLastIfActive: bool | None = Field(
        default=None,
        description="A duplicate of a running job is kept (the newest) and added when it ends.",
    )


#: The queue's own key names, which no jobId may be (in the published schema).
_RESERVED_IDS: list[JsonValue] = [name for name in sorted(RESERVED_JOB_IDS)]


class JobOptions(_Strict):
    """BullMQ job options. Omitted ones take the task's or the queue's defaults."""

    delay: JobDelayMs | None = Field(
        default=None, description="Milliseconds to wait before the job may run."
    )
    priority: Priority | None = Field(
        default=None, description="0 (none, the default) or 1 (highest) to 2^21 (lowest)."
    )
    attempts: Attempts | None = Field(
        default=None, description="Total attempts, the first one included."
    )
    backoff: Backoff | None = Field(
        default=None,
        description="A fixed delay in ms, or {type, delay}. Default: the task's or queue's.",
    )
    jobId: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_JOB_ID_LENGTH,
        pattern=r"^[^:/]+$",
        json_schema_extra={"not": {"anyOf": [{"pattern": "^[0-9]+$"}, {"enum": _RESERVED_IDS}]}},
        description="Your own job id (no ':' or '/', not all digits, not one of the queue's "
        "own key names such as 'wait' or 'meta'). Adding an id that exists returns the existing "
        "job (BullMQ's rule). Not with an Idempotency-Key header.",
    )
    lifo: bool | None = Field(default=None, description="Run before the jobs already waiting.")
    removeOnComplete: Keep | None = Field(
        default=None,
        description="Remove the job when it completes: true, a count of jobs to keep, or "
        "{age, count}.",
    )
    removeOnFail: Keep | None = Field(
        default=None, description="Remove the job when it fails for good (same forms)."
    )
    deduplication: Deduplication | None = Field(
        default=None,
        description="BullMQ's deduplication ({id, ttl, extend, replace, keepLastIfActive}): "
        "a duplicate adds nothing and is answered 200 with the existing job's id and "
        "`deduplicated: true`. Not with an Idempotency-Key header.",
    )

    def to_bullmq(self) -> dict[str, Any]:
        """The options as BullMQ stores them (unset ones left out)."""
        return self.model_dump(exclude_none=True)


class EnqueueRequest(_Strict):
    """One job to add: the task's name, its payload and BullMQ options."""

    name: str = Field(min_length=1, max_length=MAX_TASK_NAME_LENGTH, description="The task to run.")
    data: dict[str, Any] | None = Field(
        default=None, description="The task's payload, checked against its model. Default {}."
    )
    options: JobOptions | None = None
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUEUE_NAME_LENGTH,
        description="The queue to add it to: one of CONVEYOR_QUEUES. Default: CONVEYOR_QUEUE. "
        "In a bulk, give it once at the top.",
    )

    @field_validator("data")
    @classmethod
    def _finite(cls, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is not None and not _all_finite(data):
            raise ValueError("NaN and Infinity are not JSON; send finite numbers")
        return data


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


class BulkEnqueueRequest(_Strict):
    """Many jobs, added all together or not at all."""

    jobs: list[EnqueueRequest] = Field(min_length=1)
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUEUE_NAME_LENGTH,
        description="The queue every job goes to: one of CONVEYOR_QUEUES. Default: CONVEYOR_QUEUE.",
    )


class EnqueueResponse(BaseModel):
    """A job that Redis has accepted."""

    id: str = Field(description="The job id (BullMQ's).")
    name: str
    queue: str
    created: bool = Field(
        description="False when the job already existed (same Idempotency-Key or jobId) or "
        "was deduplicated."
    )
    deduplicated: bool = Field(
        default=False,
        description="True when options.deduplication matched a job already there: nothing "
        "was added and `id` is that job's.",
    )
    status_url: str = Field(description="Where to follow the job: GET /jobs/{id}.")


class BulkEnqueueResponse(BaseModel):
    jobs: list[EnqueueResponse]


def _moment(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


class JobStatus(BaseModel):
    """A job's current state and history."""

    id: str
    name: str
    queue: str
    state: JobState
    data: Any = Field(description="The payload as enqueued.")
    options: dict[str, Any] = Field(description="The stored BullMQ options.")
    attempts_made: int = Field(description="Attempts that have finished (failed or succeeded).")
    max_attempts: int = Field(
        description="Attempts a worker gives the job: its own `attempts` option, else its "
        "task's, else the queue's (`CONVEYOR_RETRIES` + 1)."
    )
    progress: Any = Field(description="What the task last reported (a number or an object).")
    result: Any = Field(default=None, description="The task's return value once completed.")
    failed_reason: str | None = Field(default=None, description="The last attempt's error, if any.")
    stacktrace: list[str] = Field(default_factory=list)
    delay_ms: int = 0
    priority: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = Field(default=None, description="When the last attempt began.")
    finished_at: datetime | None = None

    @classmethod
    def of(cls, info: JobRecord, state: JobState, queue: str, *, max_attempts: int) -> JobStatus:
        """``max_attempts`` from ``QueueClient.max_attempts`` (``conveyor.policy``)."""
        return cls(
            id=info.id,
            name=info.name,
            queue=queue,
            state=state,
            data=info.data,
            options=info.options,
            attempts_made=info.attempts_made,
            max_attempts=max_attempts,
            progress=info.progress,
            result=info.return_value,
            failed_reason=info.failed_reason,
            stacktrace=info.stacktrace,
            delay_ms=info.delay,
            priority=info.priority,
            created_at=_moment(info.timestamp),
            started_at=_moment(info.processed_on),
            finished_at=_moment(info.finished_on),
        )


class CancelRequestBody(_Strict):
    """Why the job is cancelled (optional; the body itself may be left out)."""

    reason: str | None = Field(
        default=None, max_length=MAX_CANCEL_REASON_LENGTH, description="Kept in failedReason."
    )


class CancelResponse(BaseModel):
    """What a cancel did."""

    id: str
    outcome: Literal["cancelled", "marked", "pending", "done"] = Field(
        description="`cancelled`: it was not running and is failed now; `marked`: it runs "
        "and its worker stops it within a second (202); `pending`: a stop was asked already "
        "(202); `done`: it was cancelled already."
    )
    previous_state: JobState = Field(description="The job's state when the cancel came.")
    state: JobState = Field(description="The job's state now.")
    failed_reason: str | None = Field(
        default=None, description="`JobCancelled: cancelled by {by}: {reason}` once failed."
    )


class JobList(BaseModel):
    state: JobState
    offset: int
    limit: int
    jobs: list[JobStatus]


class JobLogs(BaseModel):
    id: str
    logs: list[str]


class QueueCounts(BaseModel):
    """Jobs in each state."""

    waiting: int = 0
    prioritized: int = 0
    delayed: int = 0
    active: int = 0
    paused: int = 0
    completed: int = 0
    failed: int = 0
    waiting_children: int = 0


class QueueStatus(BaseModel):
    name: str
    paused: bool
    counts: QueueCounts
    total: int


class TaskInfo(BaseModel):
    name: str
    retries: int | None = Field(description="Retries after the first attempt; null: default.")
    timeout_s: float | None = None
    rate_limit: str | None = Field(
        default=None, description="The task's own rate limit (10/s); null: none."
    )
    concurrency: int | None = Field(
        default=None, description="The task's own concurrency across workers; null: none."
    )
    payload_schema: dict[str, Any] = Field(description="JSON Schema of the task's payload.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    redis: Literal["ok"] = "ok"
