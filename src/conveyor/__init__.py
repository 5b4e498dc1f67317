"""Conveyor: a distributed task queue for Python that keeps jobs in the BullMQ format."""

from conveyor._bullmq import JobRecord
from conveyor._bullmq.cancel import CancelOutcome, CancelResult
from conveyor.client import JobSpec, JobView, QueueClient
from conveyor.config import Settings, load_settings
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    JobCancelled,
    JobLockLostError,
    JobNotFoundError,
    JobOptionsError,
    JobStateError,
    LimitError,
    PayloadValidationError,
    RateLimited,
    RedisPolicyError,
    RedisUnavailableError,
    ReplicationError,
    ScheduleError,
    ScheduleNotFoundError,
    TaskError,
    UnknownTaskError,
    Unrecoverable,
)
from conveyor.hooks import JobEvent, WorkerHooks
from conveyor.jobs import JobState
from conveyor.limits import QueueLimits, RateLimit
from conveyor.policy import RetryPolicy, backoff_delay_ms
from conveyor.registry import JobContext, Task, TaskRegistry, load_registry
from conveyor.schedules import Schedule
from conveyor.scheduling import Schedules
from conveyor.services.app_worker import run_worker
from conveyor.worker import Worker, WorkerOptions

__version__ = "0.1.0"

__all__ = [
    "CancelOutcome",
    "CancelResult",
    "ConfigurationError",
    "ConveyorError",
    "JobCancelled",
    "JobContext",
    "JobEvent",
    "JobLockLostError",
    "JobNotFoundError",
    "JobOptionsError",
    "JobRecord",
    "JobSpec",
    "JobState",
    "JobStateError",
    "JobView",
    "LimitError",
    "PayloadValidationError",
    "QueueClient",
    "QueueLimits",
    "RateLimit",
    "RateLimited",
    "RedisPolicyError",
    "RedisUnavailableError",
    "ReplicationError",
    "RetryPolicy",
    "Schedule",
    "ScheduleError",
    "ScheduleNotFoundError",
    "Schedules",
    "Settings",
    "Task",
    "TaskError",
    "TaskRegistry",
    "UnknownTaskError",
    "Unrecoverable",
    "Worker",
    "WorkerHooks",
    "WorkerOptions",
    "__version__",
    "backoff_delay_ms",
    "load_registry",
    "load_settings",
    "run_worker",
]
