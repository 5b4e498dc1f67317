"""Pure values about jobs: states, retry policies and the backoff arithmetic.

Nothing here touches Redis; every decision is a function of its arguments so it can be tested
with tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from conveyor.errors import JobOptionsError

BackoffType = Literal["exponential", "fixed"]


class JobState(StrEnum):
    """Where a job is in its life, in BullMQ's own words."""

    WAITING = "waiting"
    PRIORITIZED = "prioritized"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    WAITING_CHILDREN = "waiting-children"
    UNKNOWN = "unknown"


#: The states counted for a queue, in display order.
COUNTED_STATES: tuple[JobState, ...] = (
    JobState.WAITING,
    JobState.PRIORITIZED,
    JobState.DELAYED,
    JobState.ACTIVE,
    JobState.PAUSED,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.WAITING_CHILDREN,
)


#: No wait between attempts is longer than this (30 days), however far the doubling goes.
MAX_BACKOFF_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a job gets and how long to wait between them."""

    attempts: int
    backoff_type: BackoffType = "exponential"
    backoff_delay_ms: int = 1000

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise JobOptionsError("attempts must be at least 1")
        if not 0 <= self.backoff_delay_ms <= MAX_BACKOFF_MS:
            raise JobOptionsError(f"backoff delay must be between 0 and {MAX_BACKOFF_MS} ms")

    @classmethod
    def from_retries(
        cls, retries: int, backoff_type: BackoffType = "exponential", delay_ms: int = 1000
    ) -> RetryPolicy:
        """A policy of one first attempt plus ``retries`` retries."""
        return cls(attempts=retries + 1, backoff_type=backoff_type, backoff_delay_ms=delay_ms)

    def to_job_options(self) -> dict[str, Any]:
        """The BullMQ job options that carry this policy (Node workers honour them too)."""
        return {
            "attempts": self.attempts,
            "backoff": {"type": self.backoff_type, "delay": self.backoff_delay_ms},
        }


def backoff_delay_ms(attempts_made: int, policy: RetryPolicy) -> int:
    """Delay before the next attempt, after ``attempts_made`` attempts have failed (1-based).

    Matches BullMQ's built-in strategies: fixed is ``delay``; exponential is
    ``round(2 ** (attempts_made - 1) * delay)``.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made starts at 1")
    if policy.backoff_type == "fixed":
        return policy.backoff_delay_ms
    return min((1 << min(attempts_made - 1, 62)) * policy.backoff_delay_ms, MAX_BACKOFF_MS)


def should_retry(attempts_made: int, policy: RetryPolicy, *, unrecoverable: bool = False) -> bool:
    """Whether a job that has just failed its ``attempts_made``-th attempt gets another one."""
    return not unrecoverable and attempts_made < policy.attempts


def policy_from_job_options(opts: dict[str, Any], default: RetryPolicy) -> RetryPolicy:
    """The policy a job's own BullMQ options ask for, falling back to ``default`` per field.

    A job whose options name ``attempts`` keeps them, as BullMQ users expect; ``backoff`` may be
    a number (fixed delay, BullMQ's shorthand) or ``{"type", "delay"}``.
    """
    attempts = opts.get("attempts")
    backoff = opts.get("backoff")
    backoff_type: BackoffType = default.backoff_type
    delay = default.backoff_delay_ms
    if isinstance(backoff, bool):
        raise JobOptionsError("backoff must be a number of ms or {type, delay}")
    if isinstance(backoff, int | float):
        if not math.isfinite(backoff):
            raise JobOptionsError("backoff must be a finite number of ms")
        backoff_type, delay = "fixed", int(backoff)
    elif isinstance(backoff, dict):
        kind = backoff.get("type", default.backoff_type)
        if kind not in ("exponential", "fixed"):
            raise JobOptionsError(f"unsupported backoff type {kind!r} (exponential or fixed)")
        backoff_type = kind
        raw_delay = backoff.get("delay", delay)
        if (
            not isinstance(raw_delay, int | float)
            or isinstance(raw_delay, bool)
            or not math.isfinite(raw_delay)
        ):
            raise JobOptionsError("backoff.delay must be a number of milliseconds")
        delay = int(raw_delay)
    elif backoff is not None:
        raise JobOptionsError("backoff must be a number of ms or {type, delay}")
    if attempts is None or attempts == 0:
        attempts = default.attempts
    if not isinstance(attempts, int) or isinstance(attempts, bool):
        raise JobOptionsError("attempts must be a whole number")
    return RetryPolicy(attempts=attempts, backoff_type=backoff_type, backoff_delay_ms=delay)


def is_counter_id(job_id: str) -> bool:
    """Whether ``job_id`` is a BullMQ counter id ("1", "2", ...), as BullMQ gives jobs added
    without a custom id (Node.js producers). Conveyor never makes or accepts such ids."""
    return job_id.isascii() and job_id.isdigit()


#: The seed's deployment: queue ``taskQueue`` under BullMQ's default prefix ``bull``. Its
#: permanent failures live at exactly ``failedJobs:{jobId}``, as the seed says.
SEED_PREFIX = "bull"
SEED_QUEUE = "taskQueue"


@dataclass(frozen=True)
class FailureKeys:
    """Where one queue (prefix + name) keeps the records of its permanently failed jobs.

    The one place that maps a job to its record key (worker, client, API, monitor and
    cleanup all ask it):

    - the seed's queue (``taskQueue`` under prefix ``bull``): ``failedJobs:{jobId}`` for every
      id, BullMQ counter ids included, indexed in ``failedJobs-index`` (``failedJobs`` is the
      ``failed_key_prefix`` setting);
    - every other queue: inside its own key space, ``{prefix}:{queue}:conveyor:failed:{jobId}``,
      indexed in ``{prefix}:{queue}:conveyor:failed-index``. Job ids never contain ``:``, so
      no two queues' records can share a key.

    ``legacy_record``/``legacy_index`` name where earlier versions wrote the same record
    (``failedJobs:{jobId}``, or ``failedJobs:{queue}:{jobId}`` for counter ids, all queues in
    ``failedJobs-index``): readers fall back to it when its ``queue`` and ``prefix`` fields
    are this queue's, and cleanup drains it.
    """

    prefix: str
    queue: str
    failed_key_prefix: str = "failedJobs"

    @property
    def is_seed(self) -> bool:
        return self.prefix == SEED_PREFIX and self.queue == SEED_QUEUE

    @property
    def record_base(self) -> str:
        """The record key without the job id."""
        if self.is_seed:
            return f"{self.failed_key_prefix}:"
        return f"{self.prefix}:{self.queue}:conveyor:failed:"

    @property
    def index(self) -> str:
        """A sorted set of this queue's record keys scored by failure time (ms)."""
        if self.is_seed:
            return self.legacy_index
        return f"{self.prefix}:{self.queue}:conveyor:failed-index"

    @property
    def legacy_index(self) -> str:
        return f"{self.failed_key_prefix}-index"

    def record(self, job_id: str) -> str:
        return self.record_base + job_id

    def legacy_record(self, job_id: str) -> str:
        if is_counter_id(job_id):
            return f"{self.failed_key_prefix}:{self.queue}:{job_id}"
        return f"{self.failed_key_prefix}:{job_id}"
