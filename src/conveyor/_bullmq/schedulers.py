"""BullMQ's job schedulers: the only module that speaks their format.

A scheduler is the member ``{id}`` of ``{prefix}:{queue}:repeat`` (scored by its next run, ms)
plus the hash ``…:repeat:{id}`` (name, data, pattern or every, tz, startDate, endDate, limit,
offset, ``ic`` = runs so far). Its next run is one job, id ``repeat:{id}:{ms}``, whose hash
carries ``rjk`` = the scheduler id and whose options carry ``repeat`` (``every`` or
``pattern``, ``count``, ...) and ``prevMillis`` (its slot).

Node.js BullMQ's worker (6.7, ``Worker.nextJobFromJobData``) creates the next run as it takes
a job: ``JobScheduler.upsertJobScheduler(..., {override: false, producerId: job.id})``, which
runs ``updateJobScheduler-12.lua``. That script adds the next job only while the scheduler's
score is still the taken job's slot, so however many workers take (or retake, after a stall)
the job, one next run is created per slot. ``advance`` does exactly that; ``upsert`` is
``upsertJobScheduler`` with override (``addJobScheduler-11.lua``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from conveyor._bullmq.base import pack
from conveyor._bullmq.record import JobRecord, as_dict, dumps, loads
from conveyor.clock import now_ms
from conveyor.errors import ConveyorError
from conveyor.jobs import JobState
from conveyor.keys import schedule_last_runs
from conveyor.schedules import Schedule, cron_next, lag_ms

if TYPE_CHECKING:
    from conveyor._bullmq.queue import BullQueue

#: The id of a scheduler's job for one slot.
JOB_ID_PREFIX = "repeat:"
_NOT_STARTED = (JobState.WAITING, JobState.PAUSED, JobState.PRIORITIZED, JobState.DELAYED)
_ERRORS = {-10: "a job with this schedule's next id exists already", -11: "slots busy"}


def slot_job_id(scheduler_id: str, slot_ms: int) -> str:
    return f"{JOB_ID_PREFIX}{scheduler_id}:{slot_ms}"


def _int(raw: Any) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SchedulerRecord:
    """One job scheduler as BullMQ keeps it (made by Conveyor or Node)."""

    id: str
    name: str
    raw_data: str
    every_ms: int | None
    pattern: str | None
    tz: str | None
    start_ms: int | None
    end_ms: int | None
    limit: int | None
    iterations: int
    next_ms: int | None
    template_options: dict[str, Any]
    #: The last run a Conveyor worker took: ``{"slot_ms", "job_id", "taken_ms"}`` or None.
    last_run: dict[str, Any] | None = None

    @property
    def data(self) -> Any:
        return loads(self.raw_data, {})

    @property
    def next_job_id(self) -> str | None:
        return None if self.next_ms is None else slot_job_id(self.id, self.next_ms)

    def lag_ms(self, now: int) -> int:
        """How late the due run is: 0 until its slot, once a worker took it, or when the
        schedule is over (limit reached, past its end)."""
        taken = (self.last_run or {}).get("job_id") == self.next_job_id
        over = (self.limit is not None and self.iterations >= self.limit) or (
            self.end_ms is not None and self.next_ms is not None and self.next_ms > self.end_ms
        )
        return lag_ms(self.next_ms, taken or over, now)

    @classmethod
    def from_hash(
        cls, scheduler_id: str, raw: dict[str, str], score: Any, last: str | None
    ) -> SchedulerRecord:
        opts = loads(raw.get("opts"), {})
        last_run = loads(last, None) if last else None
        return cls(
            id=scheduler_id,
            name=raw.get("name", ""),
            raw_data=raw.get("data") or "{}",
            every_ms=_int(raw.get("every")),
            pattern=raw.get("pattern") or None,
            tz=raw.get("tz") or None,
            start_ms=_int(raw.get("startDate")),
            end_ms=_int(raw.get("endDate")),
            limit=_int(raw.get("limit")),
            iterations=_int(raw.get("ic")) or 0,
            next_ms=_int(score if score is None else int(float(score))),
            template_options=opts if isinstance(opts, dict) else {},
            last_run=last_run if isinstance(last_run, dict) else None,
        )


def _next_job_options(
    base: dict[str, Any],
    scheduler_id: str,
    repeat: dict[str, Any],
    next_ms: int | None,
    count: int,
    offset: int | None,
    now: int,
) -> dict[str, Any]:
    """BullMQ's ``JobScheduler.getNextJobOpts``: the options of the next run's job (the script
    sets its id and delay)."""
    merged = {k: v for k, v in base.items() if k not in ("prevMillis", "jobId", "delay")}
    merged.update({"timestamp": now, "repeatJobKey": scheduler_id, "delay": 0})
    if next_ms is not None:
        merged["prevMillis"] = next_ms
        merged["jobId"] = slot_job_id(scheduler_id, next_ms)
        merged["delay"] = max(next_ms + (offset or 0) - now, 0)
    merged["repeat"] = {
        **{k: v for k, v in repeat.items() if k not in ("immediately",) and v is not None},
        "count": count,
        **({"offset": offset} if offset is not None else {}),
    }
    return merged


class QueueSchedulers:
    """The job schedulers of one queue (``BullQueue.schedulers``)."""

    def __init__(self, bull: BullQueue) -> None:
        self._bull = bull
        self._repeat = bull.keys["repeat"]
        self._last_runs = schedule_last_runs(bull.prefix, bull.name)

    def _keys(self, *kinds: str) -> list[str]:
        return [self._bull.keys[k] for k in kinds]

    # --- reading -----------------------------------------------------------------------------
    async def get(self, scheduler_id: str) -> SchedulerRecord | None:
        pipe = self._bull.redis.pipeline(transaction=False)
        pipe.hgetall(f"{self._repeat}:{scheduler_id}")
        pipe.zscore(self._repeat, scheduler_id)
        pipe.hget(self._last_runs, scheduler_id)
        raw, score, last = await pipe.execute()
        if not raw and score is None:
            return None
        return SchedulerRecord.from_hash(scheduler_id, as_dict(raw), score, last)

    async def is_scheduler(self, scheduler_id: str) -> bool:
        """BullMQ's ``isJobScheduler``: a scheduler's hash has ``ic``; a legacy repeatable
        job's key has none."""
        return bool(await self._bull.redis.hexists(f"{self._repeat}:{scheduler_id}", "ic"))

    async def all(self) -> list[SchedulerRecord]:
        """Every scheduler of the queue, soonest next run first (legacy repeatable jobs, which
        have no hash, are left out)."""
        raw_members = await self._bull.redis.zrange(self._repeat, 0, -1, withscores=True)
        pairs = cast(list[tuple[str, float]], raw_members)
        members = [(str(member), float(score)) for member, score in pairs]
        if not members:
            return []
        pipe = self._bull.redis.pipeline(transaction=False)
        for member, _ in members:
            pipe.hgetall(f"{self._repeat}:{member}")
        pipe.hgetall(self._last_runs)
        *hashes, last_runs = await pipe.execute()
        last = as_dict(last_runs)
        return [
            SchedulerRecord.from_hash(member, as_dict(raw), score, last.get(member))
            for (member, score), raw in zip(members, hashes, strict=True)
            if raw
        ]

    # --- writing -----------------------------------------------------------------------------
    async def upsert(
        self, schedule: Schedule, template_options: dict[str, Any] | None = None
    ) -> tuple[str, int] | None:
        """Create or replace a scheduler (BullMQ's ``upsertJobScheduler``): its next run's job
        is replaced. Answers (next job id, delay ms), or None when it would never run."""
        now = now_ms()
        if schedule.end_ms is not None and now > schedule.end_ms:
            return None
        opts = dict(template_options or {})
        repeat: dict[str, Any] = {
            "every": schedule.every_ms,
            "pattern": schedule.cron,
            "tz": schedule.tz,
            "limit": schedule.limit,
            "startDate": schedule.start_ms,
            "endDate": schedule.end_ms,
        }
        next_ms: int | None = None
        if schedule.cron is not None:
            # In a thread: next to a clock change a per-second pattern scans hours of
            # candidates (conveyor.cron), which must not hold up the event loop.
            next_ms = await asyncio.to_thread(schedule.first_run_ms, now)
            if next_ms is None:
                return None
        job_options = _next_job_options(opts, schedule.id, repeat, next_ms, 1, None, now)
        scheduler_options = {
            "name": schedule.task,
            **{k: v for k, v in repeat.items() if v is not None},
        }
        keys = self._keys(
            "repeat", "delayed", "wait", "paused", "meta", "prioritized", "marker", "id",
            "events", "pc", "active",
        )  # fmt: skip
        args = [
            next_ms if next_ms is not None else now,
            pack(scheduler_options),
            schedule.id,
            dumps(schedule.data if schedule.data is not None else {}),
            pack(opts),
            pack(job_options),
            now,
            self._bull.base,
            "",
        ]
        raw = await self._bull._run("addJobScheduler", keys, args, None)
        if isinstance(raw, int) and raw < 0:
            raise ConveyorError(f"schedule {schedule.id!r}: {_ERRORS.get(raw, raw)}")
        job_id, delay = raw
        return str(job_id), int(delay)

    async def remove(self, scheduler_id: str) -> bool:
        """Remove a scheduler and its next run's job if that has not started; answers whether
        there was one. (BullMQ's script removes a delayed next run only; one already due, in
        wait, goes too here.)"""
        score = await self._bull.redis.zscore(self._repeat, scheduler_id)
        keys = self._keys("repeat", "delayed", "events")
        raw = await self._bull._run(
            "removeJobScheduler", keys, [scheduler_id, self._bull.base], None
        )
        await self._bull.redis.hdel(self._last_runs, scheduler_id)
        if score is not None:
            job_id = slot_job_id(scheduler_id, int(float(score)))
            if await self._bull.get_state(job_id) in _NOT_STARTED:
                await self._bull.remove(job_id, records=self._bull.failure_store())
        return int(raw) == 0

    async def advance(self, job: JobRecord) -> str | None:
        """A worker took ``job``: create its scheduler's next run as Node's worker does.
        Answers the next job's id, or None (not a scheduler's job, not the current slot
        any more, limit or end reached)."""
        scheduler_id = job.repeat_key
        if scheduler_id is None:
            return None
        repeat = job.options.get("repeat")
        if not isinstance(repeat, dict):
            repeat = {}
        every = _int(repeat.get("every"))
        pattern = repeat.get("pattern") if isinstance(repeat.get("pattern"), str) else None
        if every is None and pattern is None:
            # Not in the job: the scheduler's own record says (BullMQ's script does the same
            # for ``every``).
            record = await self.get(scheduler_id)
            if record is None:
                return None
            every, pattern = record.every_ms, record.pattern
            repeat = {**repeat, "every": every, "pattern": pattern, "tz": record.tz}
        count = (_int(repeat.get("count")) or 0) + 1
        limit = _int(repeat.get("limit"))
        if limit is not None and count > limit:
            return None
        now = now_ms()
        end_ms = _int(repeat.get("endDate"))
        if end_ms is not None and now > end_ms:
            return None
        prev = _int(job.options.get("prevMillis")) or 0
        now = max(now, prev)
        next_ms: int | None = None
        if pattern is not None and every is None:
            tz = repeat.get("tz") if isinstance(repeat.get("tz"), str) else None
            start = _int(repeat.get("startDate"))
            next_ms = await asyncio.to_thread(cron_next, pattern, tz, now, start, end_ms)
            if next_ms is None:
                return None
        offset = _int(repeat.get("offset")) if every else None
        options = _next_job_options(
            job.options, scheduler_id, repeat, next_ms, count, offset or None, now
        )
        keys = self._keys(
            "repeat", "delayed", "wait", "paused", "meta", "prioritized", "marker", "id",
            "events", "pc",
        )  # fmt: skip
        keys += [self._bull.job_key(job.id), self._bull.keys["active"]]
        args = [
            next_ms if next_ms is not None else now,
            scheduler_id,
            job.raw_data,
            pack(options),
            now,
            self._bull.base,
            job.id,
        ]
        raw = await self._bull._run("updateJobScheduler", keys, args, None)
        taken = {"slot_ms": _slot_of(job.id), "job_id": job.id, "taken_ms": now_ms()}
        await self._bull.redis.hset(self._last_runs, scheduler_id, json.dumps(taken))
        return str(raw) if raw else None

    async def run_now(self, record: SchedulerRecord, job_id: str) -> str:
        """Add one job now with the scheduler's task, data and options, outside its slots
        (its next run stays as it was)."""
        options = {
            k: v
            for k, v in record.template_options.items()
            if k not in ("repeat", "jobId", "delay", "prevMillis", "repeatJobKey")
        }
        await self._bull.add_job(job_id, record.name, record.raw_data, options)
        return job_id


def _slot_of(job_id: str) -> int | None:
    tail = job_id.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None
