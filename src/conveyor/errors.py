"""The one error tree of Conveyor: everything raised on purpose derives from ConveyorError.

::

    ConveyorError
    ├── ConfigurationError
    ├── RedisUnavailableError
    │   └── ReplicationError
    ├── RedisPolicyError
    ├── EmbeddedRedisError
    ├── TaskError
    │   ├── UnknownTaskError
    │   ├── TaskCatalogueError
    │   └── PayloadValidationError
    ├── JobOptionsError
    ├── JobNotFoundError
    ├── JobStateError
    ├── JobLockLostError
    ├── LimitError
    ├── RateLimited
    ├── ScheduleError
    │   └── ScheduleNotFoundError
    └── Unrecoverable
        └── JobCancelled

The services add a few of their own at the edge (the API's ``OverloadedError``, the monitor's
``InvalidRequestError`` and ``UnknownQueueError``, cleanup's ``CleanupBusyError``), each a
``ConveyorError``; the HTTP services map every one to a problem type in one handler.
``tests/unit/test_errors.py`` checks that this drawing matches the classes.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConveyorError(Exception):
    """Raised when Conveyor cannot do what was asked; the base of every Conveyor error."""


class ConfigurationError(ConveyorError):
    """Raised when a setting is missing, malformed or inconsistent."""


class RedisUnavailableError(ConveyorError):
    """Raised when Redis cannot be reached (or stopped answering) within the allowed time."""


class ReplicationError(RedisUnavailableError):
    """Raised when fewer replicas than ``CONVEYOR_ENQUEUE_REPLICAS`` acknowledged a write in
    time: the master holds it, but a failover now could lose it."""


class RedisPolicyError(ConveyorError):
    """Raised when Redis is configured in a way that can lose jobs (an eviction policy)."""


class EmbeddedRedisError(ConveyorError):
    """Raised when the embedded redis-server cannot be found or started."""


class TaskError(ConveyorError):
    """Raised for problems with the task catalogue."""


class UnknownTaskError(TaskError):
    """Raised when a job names a task that the catalogue does not know."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown task {name!r}; known tasks: {', '.join(self.known) or 'none'}")


class TaskCatalogueError(TaskError):
    """Raised when CONVEYOR_TASKS names a module that cannot be loaded or holds no registry."""


@dataclass(frozen=True)
class FieldError:
    """One field of a payload that failed validation, with its path from the payload root."""

    path: str
    message: str
    type: str


class PayloadValidationError(TaskError):
    """Raised when a job's payload does not match its task's model."""

    def __init__(self, task: str, errors: list[FieldError]) -> None:
        self.task = task
        self.errors = errors
        detail = "; ".join(f"{e.path or '<root>'}: {e.message}" for e in errors)
        super().__init__(f"invalid payload for task {task!r}: {detail}")


class JobOptionsError(ConveyorError):
    """Raised when job options (attempts, backoff, delay, priority, job id) are invalid."""


class JobNotFoundError(ConveyorError):
    """Raised when a job id names no job in the queue."""

    def __init__(self, job_id: str, queue: str) -> None:
        self.job_id = job_id
        self.queue = queue
        super().__init__(f"job {job_id!r} not found in queue {queue!r}")


class JobStateError(ConveyorError):
    """Raised when an operation does not fit the job's current state (retry a waiting job, ...)."""


class JobLockLostError(ConveyorError):
    """Raised when a worker finishes a job whose lock it no longer holds (another has it)."""


class LimitError(ConveyorError, ValueError):
    """Raised when a rate limit or a concurrency is malformed or out of bounds."""


class RateLimited(ConveyorError):
    """Raised by a handler to hold the whole queue back for ``retry_after_s`` (an upstream
    429, say): BullMQ's manual rate limit. The job goes back to wait without using an
    attempt; no worker of the queue starts a job until the hold ends."""

    #: Longest hold (seconds): one week.
    MAX_RETRY_AFTER_S = 7 * 24 * 3600

    def __init__(self, retry_after_s: float, message: str = "") -> None:
        if not 0 < retry_after_s <= self.MAX_RETRY_AFTER_S:  # NaN included
            raise LimitError(
                f"RateLimited: retry_after_s must be above 0 and at most "
                f"{self.MAX_RETRY_AFTER_S} s, not {retry_after_s!r}"
            )
        self.retry_after_s = retry_after_s
        super().__init__(message or f"rate limited: hold the queue for {retry_after_s:g} s")


class ScheduleError(ConveyorError):
    """Raised when a schedule is invalid: a bad cron pattern or time zone, both or neither of
    ``every_ms`` and ``cron``, an id BullMQ cannot hold, an end before its start."""


class ScheduleNotFoundError(ScheduleError):
    """Raised when a schedule id names no schedule (job scheduler) of the queue."""

    def __init__(self, schedule_id: str, queue: str) -> None:
        self.schedule_id = schedule_id
        self.queue = queue
        super().__init__(f"schedule {schedule_id!r} not found in queue {queue!r}")


class Unrecoverable(ConveyorError):
    """Raised by a handler when retrying cannot help: the job fails for good at once."""


class JobCancelled(Unrecoverable):
    """Raised by a worker when a job was cancelled (``QueueClient.cancel``, the API, the
    monitor): the job fails for good, its failedReason ``JobCancelled: cancelled by …``. The
    handler itself sees ``asyncio.CancelledError`` (async) or ``ctx.cancelled`` (sync)."""
