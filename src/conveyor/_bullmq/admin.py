"""Managing a queue's jobs from outside a worker: remove, retry (reprocess), pause, and the
bounded cleanup of finished jobs with their failure records."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio.client import Pipeline

from conveyor._bullmq.base import QueueBase
from conveyor._bullmq.cancel import CANCEL_FIELD
from conveyor._bullmq.scripts import script_error
from conveyor.errors import JobStateError
from conveyor.failures import FailureStore, parse_sweep
from conveyor.jobs import JobState
from conveyor.keys import cancel_mark


@dataclass(frozen=True)
class CleanedBatch:
    """What one bounded cleanup step of the failed set removed."""

    #: Failed jobs removed (hash, logs, set entry), by BullMQ's cleanJobsInSet.
    job_ids: list[str]
    #: Failure records removed with their index entries.
    records_removed: int
    #: Index entries in the window that stay (another queue's, or their job is still failed).
    records_kept: int
    #: Index entries dropped because their record no longer existed.
    index_entries_dropped: int
    #: Index entries the window looked at (equal to the limit: there may be more).
    examined: int


class QueueAdmin(QueueBase):
    """The management calls of ``BullQueue``."""

    async def remove(self, job_id: str, *, records: FailureStore) -> bool:
        """Remove a job that is not locked (and its failure record); False when a worker holds
        it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._run(
                "removeJob",
                [self.job_key(job_id), self.keys["repeat"]],
                [job_id, 1, self.base],
                pipe,
            )
            await records.forget(job_id, pipe)
            pipe.delete(cancel_mark(self.prefix, self.name, job_id))
            removed, *_ = await pipe.execute()
        return bool(removed and int(removed) == 1)

    async def reprocess(
        self, job_id: str, state: JobState, *, records: FailureStore, lifo: bool = False
    ) -> None:
        """Move a finished (failed or completed) job back to wait, as BullMQ's Job.retry, and
        drop its failure record (and any cancel request: it is to run again) in the same
        transaction."""
        keys = [self.job_key(job_id), self.keys["events"], self.keys[state.value]]
        keys += self._keys("wait", "meta", "active", "marker", "prioritized", "pc")
        prop = "failedReason" if state is JobState.FAILED else "returnvalue"
        args = [job_id, "RPUSH" if lifo else "LPUSH", prop, state.value, "1", "0"]
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._run("reprocessJob", keys, args, pipe)
            await records.forget(job_id, pipe)
            pipe.delete(cancel_mark(self.prefix, self.name, job_id))
            pipe.hdel(self.job_key(job_id), CANCEL_FIELD)
            raw, *_ = await pipe.execute()
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, "reprocessJob", queue=self.name)

    async def pause(self, paused: bool) -> None:
        """Pause or resume the queue for every worker (BullMQ's pause script plus the
        paused-layout guard: a pause keeps waiting jobs where BullMQ 5 expects them, a resume
        moves every job in "paused" back to "wait" in the same call)."""
        src, dst = ("wait", "paused") if paused else ("paused", "wait")
        keys = self._keys(src, dst, "meta", "prioritized", "events", "delayed", "marker")
        await self._run("pause", keys, ["paused" if paused else "resumed"], None)

    # --- cleanup -------------------------------------------------------------------------------
    async def clean(
        self, state: JobState, older_than_ms: int, limit: int, pipe: Pipeline | None = None
    ) -> list[str]:
        """BullMQ's Queue.clean on a finished set: remove up to ``limit`` jobs that finished at
        or before ``older_than_ms`` (their hash and logs too); answers their ids. With
        ``pipe`` the call is only queued: the ids come back from ``pipe.execute()``."""
        if state not in (JobState.COMPLETED, JobState.FAILED):
            raise JobStateError(f"only completed or failed jobs can be cleaned, not {state}")
        if limit < 1:
            raise ValueError("limit must be at least 1 (0 would mean unlimited to BullMQ)")
        keys = [self.keys[state.value], self.keys["events"], self.keys["repeat"]]
        raw = await self._run(
            "cleanJobsInSet", keys, [self.base, older_than_ms, limit, state.value], pipe
        )
        return [str(j) for j in raw or []] if pipe is None else []

    async def clean_failed(
        self,
        older_than_ms: int,
        limit: int,
        *,
        records: FailureStore,
        index: str | None = None,
        offset: int = 0,
    ) -> CleanedBatch:
        """One bounded step of failure cleanup, consistent across both stores.

        In one MULTI: up to ``limit`` failed jobs older than the cutoff are removed, then one
        window of a failure index (``index``: the queue's own by default, or the legacy one
        being drained; ``offset``, ``limit``) is swept of this queue's records whose job is
        gone. The records of the jobs just removed are then removed by key, at their key and
        their legacy key (in case their record was written a moment after the job's
        finishedOn, or sits outside the window).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        walked = index or records.keys.index
        async with self.redis.pipeline(transaction=True) as pipe:
            await self.clean(JobState.FAILED, older_than_ms, limit, pipe=pipe)
            await records.sweep(
                walked,
                cutoff_ms=older_than_ms,
                offset=offset,
                limit=limit,
                keep_removed=False,
                pipe=pipe,
            )
            cleaned, swept = await pipe.execute()
        job_ids = [str(j) for j in cleaned or []]
        window = parse_sweep(swept)
        removed = window.removed
        if job_ids:
            keys = records.keys
            record_keys = [keys.record(j) for j in job_ids]
            record_keys += [keys.legacy_record(j) for j in job_ids]
            explicit = await records.sweep(
                walked, cutoff_ms=older_than_ms, keep_removed=False, record_keys=record_keys
            )
            assert explicit is not None
            removed += explicit.removed
        return CleanedBatch(job_ids, removed, window.kept, window.dangling, window.examined)
