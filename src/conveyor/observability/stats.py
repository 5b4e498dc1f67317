"""Throughput and latency history kept in Redis: written by workers, read by the monitor.

Workers record through ``StatsHooks`` (a ``WorkerHooks``): each finished attempt only bumps
counters in process memory; a flusher writes what accumulated once a second in one MULTI, so
no Redis round trip is added per job. Everything lives under the queue's own BullMQ key base
(``{prefix}:{queue}:conveyor:*``), so deleting a queue deletes its history too.

Keys, per queue:

- ``…:conveyor:ts:{minute}`` (a hash per minute, epoch seconds of the minute's start, expiring
  after the retention): field ``{second}:{metric}`` for second 0-59 and metric ``c`` completed,
  ``f`` failed for good, ``r`` retried, ``n`` attempts timed, ``w`` wait ms summed, ``d`` run
  ms summed. The charts read these.
- ``…:conveyor:totals`` (a hash, never expiring, bounded by task names and buckets): field
  ``{metric}:{task}``, metrics ``completed``, ``failed``, ``retried``, ``deferred`` (put
  back for want of the task, not an attempt), ``cancelled`` (counted by the cancel script or
  the worker that stopped the job, ``conveyor._bullmq.cancel``, not here), ``run_sum_ms``,
  ``wait_sum_ms`` and ``run_le_{bound}`` / ``wait_le_{bound}`` (a histogram bucket,
  not cumulative). ``/metrics`` reads these.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from conveyor import keys
from conveyor.hooks import JobEvent
from conveyor.log import get_logger

log = get_logger("conveyor.stats")

#: Histogram bucket upper bounds for run and wait times (seconds); +Inf is implied.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip
#: How often the flusher writes to Redis (seconds).
FLUSH_INTERVAL_S = 1.0
#: Seconds of unflushed history kept in memory while Redis is unreachable.
MAX_PENDING_SECONDS = 3600
#: The task label of jobs whose name the worker's catalogue does not know (bounds cardinality).
UNKNOWN_TASK = "_unknown"
#: Extra life of a minute hash beyond the retention, so the oldest minute is whole.
_TTL_MARGIN_S = 120

_SECOND_METRICS = ("c", "f", "r", "n", "w", "d")
_TOTAL_COUNTERS = ("completed", "failed", "retried", "deferred", "cancelled")


def minute_key(prefix: str, queue: str, minute: int) -> str:
    return keys.stats_minute(prefix, queue, minute)


def totals_key(prefix: str, queue: str) -> str:
    return keys.stats_totals(prefix, queue)


def bucket_label(bound: float) -> str:
    """A bucket bound as Prometheus writes ``le`` (``0.5``, ``10.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


_BUCKET_LABELS = (*(bucket_label(bound) for bound in DURATION_BUCKETS_S), "+Inf")


def bucket_for(seconds: float) -> str:
    """The label of the smallest bucket holding ``seconds``."""
    return _BUCKET_LABELS[bisect_left(DURATION_BUCKETS_S, seconds)]


@dataclass
class _Pending:
    """What accumulated in memory since the last flush."""

    seconds: dict[tuple[str, int], dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    totals: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )

    def __bool__(self) -> bool:
        return bool(self.seconds or self.totals)

    def merge(self, other: _Pending) -> None:
        for key, values in other.seconds.items():
            for metric, value in values.items():
                self.seconds[key][metric] += value
        for queue, values in other.totals.items():
            for name, value in values.items():
                self.totals[queue][name] += value
        if len(self.seconds) > MAX_PENDING_SECONDS:
            for key in sorted(self.seconds, key=lambda k: k[1])[:-MAX_PENDING_SECONDS]:
                del self.seconds[key]


class StatsHooks:
    """Worker hooks that record per-second throughput and latency, flushed to Redis.

    Start ``run()`` as a task next to the worker and ``await close()`` after it stops (the last
    second is flushed then). ``task_names`` (the catalogue's names) bounds the task label: any
    other job name is recorded as ``_unknown``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        history_minutes: int = 60,
        task_names: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = history_minutes * 60 + _TTL_MARGIN_S
        self.task_names = frozenset(task_names) if task_names is not None else None
        self.clock = clock
        self._pending = _Pending()
        self._names: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self._task: asyncio.Task[None] | None = None

    # --- WorkerHooks -------------------------------------------------------------------------
    def job_started(self, event: JobEvent) -> None:
        pass

    def job_completed(self, event: JobEvent) -> None:
        self._record(event, "c", "completed")

    def job_retrying(self, event: JobEvent) -> None:
        self._record(event, "r", "retried")

    def job_failed(self, event: JobEvent) -> None:
        self._record(event, "f", "failed")

    def job_deferred(self, event: JobEvent) -> None:
        # Not an attempt: only counted (by task, which is `_unknown` here by definition).
        task = event.name
        if self.task_names is not None and task not in self.task_names:
            task = UNKNOWN_TASK
        self._pending.totals[event.queue]["deferred:" + task] += 1

    def _record(self, event: JobEvent, short: str, counter: str) -> None:
        second = int(self.clock())
        wait_ms = max(0.0, event.wait_ms)
        run_ms = max(0.0, event.duration_ms)
        per_second = self._pending.seconds[(event.queue, second)]
        per_second[short] += 1
        per_second["n"] += 1
        per_second["w"] += wait_ms
        per_second["d"] += run_ms
        task = event.name
        if self.task_names is not None and task not in self.task_names:
            task = UNKNOWN_TASK
        totals = self._pending.totals[event.queue]
        names = self._names.get((counter, task))
        if names is None:  # the field names of one (counter, task), built once
            names = self._names[(counter, task)] = (
                f"{counter}:{task}", f"run_sum_ms:{task}", f"wait_sum_ms:{task}", f":{task}",
            )  # fmt: skip
        count_name, run_sum, wait_sum, suffix = names
        totals[count_name] += 1
        totals[run_sum] += run_ms
        totals[wait_sum] += wait_ms
        totals["run_le_" + bucket_for(run_ms / 1000) + suffix] += 1
        totals["wait_le_" + bucket_for(wait_ms / 1000) + suffix] += 1

    # --- flushing ------------------------------------------------------------------------------
    async def flush(self) -> bool:
        """Write what accumulated in one MULTI; on a Redis error keep it for the next try."""
        if not self._pending:
            return True
        pending, self._pending = self._pending, _Pending()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                expiring: set[str] = set()
                for (queue, second), values in pending.seconds.items():
                    minute = second - second % 60
                    key = minute_key(self.prefix, queue, minute)
                    for metric, value in values.items():
                        _increment(pipe, key, f"{second - minute}:{metric}", value)
                    expiring.add(key)
                for key in expiring:
                    pipe.expire(key, self.ttl_s)
                for queue, values in pending.totals.items():
                    key = totals_key(self.prefix, queue)
                    for name, value in values.items():
                        _increment(pipe, key, name, value)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            pending.merge(self._pending)
            self._pending = pending
            log.warning("stats_flush_failed", error=str(exc))
            return False
        return True

    async def run(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Flush every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.flush()

    def start(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Start the flusher in the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(interval_s), name="conveyor-stats-flush")

    async def close(self) -> None:
        """Stop the flusher and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def _increment(pipe: Pipeline, key: str, name: str, value: float) -> None:
    if float(value).is_integer():
        pipe.hincrby(key, name, int(value))
    else:
        pipe.hincrbyfloat(key, name, round(value, 3))


# --- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HistoryPoint:
    """One step of the history: rates per second and mean times of the attempts in it."""

    t: int  # epoch seconds of the step's start
    completed: float
    failed: float
    retried: float
    wait_ms: float | None
    run_ms: float | None


async def read_history(
    redis: Redis,
    prefix: str,
    queue: str,
    *,
    minutes: int,
    step_s: int = 1,
    now: float | None = None,
) -> list[HistoryPoint]:
    """The last ``minutes`` of a queue's history, in steps of ``step_s`` (oldest first).

    The current, unfinished second is left out (workers flush it a moment later).
    """
    if minutes < 1 or step_s < 1:
        raise ValueError("minutes and step_s must be positive")
    end = int(now if now is not None else time.time())
    end -= end % step_s
    start = end - minutes * 60
    first_minute = start - start % 60
    minutes_keys = list(range(first_minute, end + 1, 60))
    async with redis.pipeline(transaction=False) as pipe:
        for minute in minutes_keys:
            pipe.hgetall(minute_key(prefix, queue, minute))
        raws: list[dict[str, str]] = await pipe.execute()
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for minute, raw in zip(minutes_keys, raws, strict=True):
        for name, value in raw.items():
            offset, _, metric = name.partition(":")
            second = minute + int(offset)
            if start <= second < end and metric in _SECOND_METRICS:
                sums[second - (second - start) % step_s][metric] += float(value)
    points = []
    for t in range(start, end, step_s):
        step = sums.get(t, {})
        timed = step.get("n", 0.0)
        points.append(
            HistoryPoint(
                t=t,
                completed=step.get("c", 0.0) / step_s,
                failed=step.get("f", 0.0) / step_s,
                retried=step.get("r", 0.0) / step_s,
                wait_ms=step.get("w", 0.0) / timed if timed else None,
                run_ms=step.get("d", 0.0) / timed if timed else None,
            )
        )
    return points


@dataclass
class Histogram:
    """A histogram read back from the totals: non-cumulative counts by bucket label."""

    buckets: dict[str, float] = field(default_factory=dict)
    sum_s: float = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count), ending with +Inf."""
        out: list[tuple[str, float]] = []
        running = 0.0
        for bound in (*DURATION_BUCKETS_S, math.inf):
            label = bucket_label(bound)
            running += self.buckets.get(label, 0.0)
            out.append((label, running))
        return out


@dataclass
class TaskTotals:
    """All-time counters of one task on one queue."""

    completed: float = 0.0
    failed: float = 0.0
    retried: float = 0.0
    #: Times a job was put back because the worker did not know its task (not attempts).
    deferred: float = 0.0
    #: Jobs cancelled (failed as cancelled; also counted in ``failed`` when a worker stopped
    #: them while running).
    cancelled: float = 0.0
    run: Histogram = field(default_factory=Histogram)
    wait: Histogram = field(default_factory=Histogram)


async def read_totals(redis: Redis, prefix: str, queue: str) -> dict[str, TaskTotals]:
    """A queue's all-time counters and histograms, by task name."""
    raw: dict[str, str] = await redis.hgetall(totals_key(prefix, queue))  # type: ignore[assignment]
    return parse_totals(raw.items())


def parse_totals(items: Iterable[tuple[str, str]]) -> dict[str, TaskTotals]:
    totals: dict[str, TaskTotals] = defaultdict(TaskTotals)
    for name, raw_value in items:
        metric, _, task = name.partition(":")
        value = float(raw_value)
        entry = totals[task]
        if metric in _TOTAL_COUNTERS:
            setattr(entry, metric, value)
        elif metric == "run_sum_ms":
            entry.run.sum_s = value / 1000
        elif metric == "wait_sum_ms":
            entry.wait.sum_s = value / 1000
        elif metric.startswith("run_le_"):
            entry.run.buckets[metric.removeprefix("run_le_")] = value
        elif metric.startswith("wait_le_"):
            entry.wait.buckets[metric.removeprefix("wait_le_")] = value
    return dict(totals)
