"""Reading a queue: jobs, states, counts, ranges, logs and the event stream."""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import Pipeline

from conveyor._bullmq.base import QueueBase, state_of
from conveyor._bullmq.record import FailureSummary, JobRecord, _int
from conveyor.jobs import JobState


class QueueReads(QueueBase):
    """The read-only calls of ``BullQueue``."""

    # --- job and queue queries ---------------------------------------------------------------
    async def get_job(self, job_id: str) -> JobRecord | None:
        raw: dict[str, str] = await self.redis.hgetall(self.job_key(job_id))  # type: ignore[assignment]
        return JobRecord.from_hash(job_id, raw) if raw else None

    async def get_jobs(self, job_ids: list[str]) -> list[JobRecord]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.job_key(job_id))
            raws = await pipe.execute()
        return [JobRecord.from_hash(j, r) for j, r in zip(job_ids, raws, strict=True) if r]

    async def get_state(self, job_id: str, pipe: Pipeline | None = None) -> JobState:
        keys = self._keys(
            "completed", "failed", "delayed", "active", "wait", "paused", "waiting-children",
            "prioritized",
        )  # fmt: skip
        raw = await self._run("getStateV2", keys, [job_id, self.job_key(job_id)], pipe)
        return state_of(raw)

    async def get_job_with_state(self, job_id: str) -> tuple[JobRecord | None, JobState]:
        """The job hash and its state read in one MULTI, so they agree."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await self.get_state(job_id, pipe)
            await pipe.hgetall(self.job_key(job_id))
            state, raw = await pipe.execute()
        info = JobRecord.from_hash(job_id, raw) if raw else None
        return info, state_of(state)

    async def failure_summaries(self, job_ids: list[str]) -> list[FailureSummary]:
        """Name, reason and failure time of each job (one pipelined round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.job_key(job_id), ["name", "failedReason", "finishedOn"])
            rows: list[list[str | None]] = await pipe.execute()
        return [
            FailureSummary(job_id, name, reason, _int(finished))
            for job_id, (name, reason, finished) in zip(job_ids, rows, strict=True)
        ]

    async def oldest_waiting_due_ms(self) -> int | None:
        """When the job that has waited longest in the wait (or paused) list became due
        (enqueue time plus delay, ms); None when none waits. Markers (``0:…``) are no jobs."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lindex(self.keys["wait"], -1)
            pipe.lindex(self.keys["paused"], -1)
            tails = await pipe.execute()
        ids = [str(t) for t in tails if t and not str(t).startswith("0:")]
        if not ids:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.job_key(job_id), ["timestamp", "delay"])
            rows = await pipe.execute()
        dues = [_int(ts) + _int(delay) for ts, delay in rows if ts is not None]
        return min(dues) if dues else None

    async def get_counts(self, states: list[JobState]) -> dict[JobState, int]:
        names = ["wait" if s is JobState.WAITING else s.value for s in states]
        raw = await self._run("getCounts", [self.keys[""]], names, None)
        return {s: int(n or 0) for s, n in zip(states, raw, strict=True)}

    async def get_range(
        self, states: list[JobState], start: int, end: int, *, ascending: bool = False
    ) -> list[str]:
        """Job ids in the given states, newest first unless ``ascending``."""
        names = ["wait" if s is JobState.WAITING else s.value for s in states]
        raw = await self._run(
            "getRanges", [self.keys[""]], [start, end, "1" if ascending else "0", *names], None
        )
        ids: list[str] = []
        for name, part in zip(names, raw, strict=True):
            part = list(part or [])
            if ascending and name in ("wait", "active", "paused"):
                part.reverse()
            ids.extend(str(j) for j in part)
        return ids

    async def is_paused(self) -> bool:
        return bool(await self.redis.hexists(self.keys["meta"], "paused"))

    async def get_logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        rows = await self.redis.lrange(self.job_key(job_id) + ":logs", start, end)
        return [str(r) for r in rows]

    # --- the event stream ---------------------------------------------------------------------
    async def read_events(self, after: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries of the queue's event stream after the entry id ``after``
        (``"0"``: from the start), oldest first."""
        start = "-" if after in ("", "0", "0-0") else _next_stream_id(after)
        raw: Any = await self.redis.xrange(self.keys["events"], start, "+", count=count)
        return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in raw or []]

    async def last_event_id(self) -> str:
        """The id of the newest entry of the queue's event stream ("0" when it is empty)."""
        raw = await self.redis.xrevrange(self.keys["events"], "+", "-", count=1)
        return str(raw[0][0]) if raw else "0"


def _next_stream_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (XRANGE's exclusive start needs Redis 6.2)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
