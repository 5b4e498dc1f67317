"""The job rules, in one place: how many attempts a job gets, how long it waits between them,
and the limits of every job option.

Every reader asks this module (the client before it enqueues, the worker after a failed
attempt, the API's models and ``GET /jobs/{id}``, the monitor), so they cannot disagree. The
retry policy of a job comes from, first to last:

1. the job's own BullMQ options (``attempts``, ``backoff``), as BullMQ users expect;
2. its task's ``retries`` / ``backoff_type`` / ``backoff_delay_ms``;
3. the settings (``Settings.retry_policy``: ``CONVEYOR_RETRIES`` and the backoff ones).

Each field falls back on its own: a Node.js job with ``backoff`` but no ``attempts`` keeps its
backoff and gets the task's (or the settings') attempts. Pure values and functions only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from conveyor.errors import JobOptionsError

BackoffType = Literal["exponential", "fixed"]

#: Retries after the first attempt when neither the job nor its task says (6 attempts).
DEFAULT_RETRIES = 5
#: The base of the backoff when neither the job nor its task says.
DEFAULT_BACKOFF_DELAY_MS = 1000
#: A job's ``attempts`` (and a task's ``retries`` + 1) may not exceed this.
MAX_ATTEMPTS = 1000
#: No backoff delay, written as a number or as ``{type, delay}``, and no wait between attempts
#: however far the doubling goes, is longer than this (30 days).
MAX_BACKOFF_MS = 30 * 24 * 3600 * 1000
#: A job's ``delay``: ten years; later is a mistake, not a schedule.
MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000
#: A job's ``priority``: BullMQ's limit (2^21); 0 is none, 1 the highest.
MAX_PRIORITY = 2_097_152
#: Counts (jobs) and ages (seconds) in ``removeOnComplete`` / ``removeOnFail``.
MAX_KEEP = 2**31 - 1
#: A job's own ``jobId``, in characters.
MAX_JOB_ID_LENGTH = 256
#: Job options a caller may set, in BullMQ's own words.
ALLOWED_OPTIONS = frozenset(
    {
        "delay",
        "priority",
        "attempts",
        "backoff",
        "jobId",
        "lifo",
        "removeOnComplete",
        "removeOnFail",
        "deduplication",
    }
)
#: A ``deduplication.id``, in characters (it names the key ``{prefix}:{queue}:de:{id}``).
MAX_DEDUPLICATION_ID_LENGTH = 256
#: What BullMQ's Redis scripts (Node 6.7, the pinned Python bullmq) honour in ``deduplication``.
DEDUPLICATION_FLAGS = ("extend", "replace", "keepLastIfActive")


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a job gets and how long to wait between them."""

    attempts: int
    backoff_type: BackoffType = "exponential"
    backoff_delay_ms: int = DEFAULT_BACKOFF_DELAY_MS

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise JobOptionsError("attempts must be at least 1")
        if not 0 <= self.backoff_delay_ms <= MAX_BACKOFF_MS:
            raise JobOptionsError(f"backoff delay must be between 0 and {MAX_BACKOFF_MS} ms")

    @classmethod
    def from_retries(
        cls,
        retries: int,
        backoff_type: BackoffType = "exponential",
        delay_ms: int = DEFAULT_BACKOFF_DELAY_MS,
    ) -> RetryPolicy:
        """A policy of one first attempt plus ``retries`` retries."""
        return cls(attempts=retries + 1, backoff_type=backoff_type, backoff_delay_ms=delay_ms)

    def to_job_options(self) -> dict[str, Any]:
        """The BullMQ job options that carry this policy (Node workers honour them too)."""
        return {
            "attempts": self.attempts,
            "backoff": {"type": self.backoff_type, "delay": self.backoff_delay_ms},
        }


#: Conveyor's policy when nothing else is said: 5 retries, exponential from 1 s.
DEFAULT_POLICY = RetryPolicy.from_retries(DEFAULT_RETRIES)


class TaskRetries(Protocol):
    """A task's own retry settings (``conveyor.registry.Task``); None: not set."""

    @property
    def retries(self) -> int | None: ...
    @property
    def backoff_type(self) -> BackoffType | None: ...
    @property
    def backoff_delay_ms(self) -> int | None: ...


def task_policy(task: TaskRetries | None, default: RetryPolicy) -> RetryPolicy:
    """Step 2 over step 3: the task's own retries and backoff, each falling back to
    ``default``."""
    if task is None or (
        task.retries is None and task.backoff_type is None and task.backoff_delay_ms is None
    ):
        return default
    return RetryPolicy.from_retries(
        task.retries if task.retries is not None else default.attempts - 1,
        task.backoff_type or default.backoff_type,
        task.backoff_delay_ms if task.backoff_delay_ms is not None else default.backoff_delay_ms,
    )


def check_task_rules(task: TaskRetries) -> None:
    """A task's own retries and backoff within the same limits as a job's options. Raises
    JobOptionsError."""
    if task.retries is not None and not 0 <= task.retries < MAX_ATTEMPTS:
        raise JobOptionsError(f"retries must be between 0 and {MAX_ATTEMPTS - 1}")
    task_policy(task, DEFAULT_POLICY)  # RetryPolicy checks the backoff delay


def _is_whole(value: object) -> bool:
    return type(value) is int


def _number_ms(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_backoff(value: object, default: RetryPolicy) -> tuple[BackoffType, int]:
    """A job's ``backoff`` option as (type, delay ms): a number is a fixed delay (BullMQ's
    shorthand), ``{type, delay}`` names both; either way the delay is checked against the same
    limit, ``MAX_BACKOFF_MS``. None keeps ``default``'s."""
    if value is None:
        return default.backoff_type, default.backoff_delay_ms
    if _number_ms(value):
        backoff_type: BackoffType = "fixed"
        delay: object = value
    elif isinstance(value, Mapping):
        kind = value.get("type", default.backoff_type)
        if kind not in ("exponential", "fixed"):
            raise JobOptionsError(f"unsupported backoff type {kind!r} (exponential or fixed)")
        backoff_type = kind
        delay = value.get("delay", default.backoff_delay_ms)
        if not _number_ms(delay):
            raise JobOptionsError("backoff.delay must be a number of milliseconds")
    else:
        raise JobOptionsError("backoff must be a finite number of ms or {type, delay}")
    ms = int(delay)  # type: ignore[call-overload]
    if not 0 <= ms <= MAX_BACKOFF_MS:
        raise JobOptionsError(f"backoff delay must be between 0 and {MAX_BACKOFF_MS} ms")
    return backoff_type, ms


def policy_from_job_options(opts: Mapping[str, Any], default: RetryPolicy) -> RetryPolicy:
    """Step 1 over ``default``: the policy a job's own BullMQ options ask for, each field
    falling back to ``default``'s. Raises JobOptionsError for options it cannot honour."""
    backoff_type, delay = parse_backoff(opts.get("backoff"), default)
    attempts = opts.get("attempts")
    if attempts is None or attempts == 0:
        attempts = default.attempts
    if not _is_whole(attempts):
        raise JobOptionsError("attempts must be a whole number")
    return RetryPolicy(attempts=attempts, backoff_type=backoff_type, backoff_delay_ms=delay)


def effective_policy(
    options: Mapping[str, Any], default: RetryPolicy, task: TaskRetries | None = None
) -> tuple[RetryPolicy, JobOptionsError | None]:
    """The policy a stored job runs under: job options > task > ``default`` (the settings').

    Never raises, as a job already in the queue (a Node.js job with a custom backoff strategy,
    say) must still run: options it cannot honour fall back, the backoff first (keeping its
    ``attempts``), then the whole of step 1. The problem, if any, comes back for the caller
    to log.
    """
    base = task_policy(task, default)
    try:
        return policy_from_job_options(options, base), None
    except JobOptionsError as exc:
        problem = exc
    try:
        return policy_from_job_options({**options, "backoff": None}, base), problem
    except JobOptionsError:
        return base, problem


def max_attempts(
    options: Mapping[str, Any], default: RetryPolicy, task: TaskRetries | None = None
) -> int:
    """``effective_policy(...).attempts``, without building the policy (once per job on the
    worker's hot path, and for every job the API or the monitor shows)."""
    attempts = options.get("attempts")
    if type(attempts) is int and attempts > 0:
        return attempts
    if task is not None and task.retries is not None:
        return task.retries + 1
    return default.attempts


def backoff_delay_ms(attempts_made: int, policy: RetryPolicy) -> int:
    """Delay before the next attempt, after ``attempts_made`` attempts have failed (1-based).

    Matches BullMQ's built-in strategies: fixed is ``delay``; exponential is
    ``2 ** (attempts_made - 1) * delay``, capped at ``MAX_BACKOFF_MS``.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made starts at 1")
    if policy.backoff_type == "fixed":
        return policy.backoff_delay_ms
    return min((1 << min(attempts_made - 1, 62)) * policy.backoff_delay_ms, MAX_BACKOFF_MS)


def should_retry(attempts_made: int, policy: RetryPolicy, *, unrecoverable: bool = False) -> bool:
    """Whether a job that has just failed its ``attempts_made``-th attempt gets another one."""
    return not unrecoverable and attempts_made < policy.attempts


# --- option limits ---------------------------------------------------------------------------
def _check_whole(
    options: Mapping[str, Any], key: str, low: int, high: int, *, name: str | None = None
) -> None:
    value = options.get(key)
    if value is None:
        return
    if not _is_whole(value):
        raise JobOptionsError(f"options.{name or key} must be a whole number")
    if not low <= value <= high:
        raise JobOptionsError(f"options.{name or key} must be between {low} and {high}")


def _keep_count(value: object) -> bool:
    return _is_whole(value) and 0 <= value <= MAX_KEEP  # type: ignore[operator]


def _check_keep(options: Mapping[str, Any], key: str) -> None:
    value = options.get(key)
    if value is None or isinstance(value, bool) or _keep_count(value):
        return
    if (
        isinstance(value, Mapping)
        and value
        and set(value) <= {"age", "count"}
        and all(_keep_count(v) for v in value.values())
    ):
        return
    raise JobOptionsError(
        f"options.{key} must be true, false, a count or {{age, count}} "
        f"(whole numbers up to {MAX_KEEP})"
    )


def check_job_id(job_id: object) -> None:
    """The shape of a caller's own ``jobId`` (the queue's reserved key names are checked by
    the client, which knows BullMQ's layout). Raises JobOptionsError."""
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID_LENGTH:
        raise JobOptionsError(
            f"options.jobId must be a string of 1 to {MAX_JOB_ID_LENGTH} characters"
        )
    if ":" in job_id or "/" in job_id:
        raise JobOptionsError("options.jobId must not contain ':' or '/'")
    if job_id.isdigit():
        raise JobOptionsError("options.jobId must not be an integer (BullMQ reserves those)")


def check_deduplication(value: object) -> None:
    """BullMQ's ``deduplication`` option: ``{id, ttl?, extend?, replace?, keepLastIfActive?}``
    (``ttl`` in ms). Raises JobOptionsError.

    Node's ``reschedule`` is refused: BullMQ's Redis scripts (Node 6.7's and the pinned Python
    bullmq's) do not implement it, so it would be silently ignored."""
    if not isinstance(value, Mapping):
        raise JobOptionsError("options.deduplication must be {id, ttl, extend, replace, ...}")
    allowed = {"id", "ttl", *DEDUPLICATION_FLAGS}
    unknown = set(value) - allowed
    if unknown:
        raise JobOptionsError(
            f"unknown options.deduplication fields: {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    dedup_id = value.get("id")
    if not isinstance(dedup_id, str) or not 1 <= len(dedup_id) <= MAX_DEDUPLICATION_ID_LENGTH:
        raise JobOptionsError(
            f"options.deduplication.id must be a string of 1 to {MAX_DEDUPLICATION_ID_LENGTH} "
            "characters"
        )
    _check_whole(value, "ttl", 0, MAX_DELAY_MS, name="deduplication.ttl")
    for flag in DEDUPLICATION_FLAGS:
        if flag in value and not isinstance(value[flag], bool):
            raise JobOptionsError(f"options.deduplication.{flag} must be true or false")


def check_option_limits(options: Mapping[str, Any], default: RetryPolicy) -> RetryPolicy:
    """Check a caller's job options: only ``ALLOWED_OPTIONS``, each within its limit (``jobId``
    apart: ``check_job_id``); answer the retry policy they ask for over ``default``. Raises
    JobOptionsError."""
    unknown = set(options) - ALLOWED_OPTIONS
    if unknown:
        raise JobOptionsError(
            f"unknown job options: {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(ALLOWED_OPTIONS))})"
        )
    _check_whole(options, "delay", 0, MAX_DELAY_MS)
    _check_whole(options, "priority", 0, MAX_PRIORITY)
    _check_whole(options, "attempts", 1, MAX_ATTEMPTS)
    for key in ("removeOnComplete", "removeOnFail"):
        _check_keep(options, key)
    if "lifo" in options and not isinstance(options["lifo"], bool):
        raise JobOptionsError("options.lifo must be true or false")
    if "deduplication" in options:
        check_deduplication(options["deduplication"])
    return policy_from_job_options(options, default)
