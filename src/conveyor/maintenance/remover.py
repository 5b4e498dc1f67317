"""The remover, cleanup's Redis side: remove old failed (and optionally completed) jobs in
bounded batches.

Every Redis call does at most ``batch_size`` removals, so a backlog of a million old failures
is worked through in many short steps that never block Redis, and nothing scans the keyspace:
jobs are found through BullMQ's failed and completed sets (sorted by finish time) and records
through the failure index (sorted by failure time). Each step removes jobs and their records
in one MULTI, so the stores stay consistent even if the process dies between steps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.jobs import JobState
from conveyor.maintenance.retention import (
    CleanupReport,
    FailureEntry,
    RetentionPolicy,
    Trigger,
    select_expired,
)

log = logging.getLogger("conveyor.cleanup")

#: Job ids kept in a report as examples.
SAMPLE_SIZE = 10


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Cleaner:
    """Removes what the retention policy says has expired, from one queue."""

    def __init__(
        self,
        redis: Redis,
        *,
        queue: str,
        prefix: str,
        failed_key_prefix: str,
        policy: RetentionPolicy,
        batch_size: int = 1000,
        pause_s: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.redis = redis
        self.bull = BullQueue(redis, queue, prefix)
        self.queue = queue
        self.prefix = prefix
        self.failed_key_prefix = failed_key_prefix
        self.records = self.bull.failure_store(failed_key_prefix)
        self.policy = policy
        self.batch_size = batch_size
        #: Pause between batches, to leave Redis to the workers on a big backlog.
        self.pause_s = pause_s

    def _report(
        self,
        now_ms: int,
        started: float,
        *,
        trigger: Trigger,
        dry_run: bool,
        failed: int,
        records: int,
        completed: int,
        dropped: int,
        sample: list[str],
    ) -> CleanupReport:
        return CleanupReport(
            queue=self.queue,
            prefix=self.prefix,
            trigger=trigger,
            dry_run=dry_run,
            started_at_ms=now_ms,
            finished_at_ms=now_ms + round((time.monotonic() - started) * 1000),
            failed_retention_s=self.policy.failed_s,
            failed_cutoff_ms=self.policy.failed_cutoff_ms(now_ms),
            completed_retention_s=self.policy.completed_s,
            completed_cutoff_ms=self.policy.completed_cutoff_ms(now_ms),
            failed_jobs_removed=failed,
            failure_records_removed=records,
            completed_jobs_removed=completed,
            index_entries_dropped=dropped,
            runner=runner_name(),
            sample_job_ids=sample[:SAMPLE_SIZE],
        )

    async def _between_batches(self) -> None:
        await asyncio.sleep(self.pause_s)

    async def run(self, now_ms: int, *, trigger: Trigger = "manual") -> CleanupReport:
        """Remove everything that has expired at ``now_ms``; answers what went."""
        started = time.monotonic()
        cutoff = self.policy.failed_cutoff_ms(now_ms)
        failed = records = dropped = 0
        sample: list[str] = []
        # The queue's own index, then (other queues than the seed's) the index an earlier
        # version shared between queues, drained of this queue's expired records.
        for index in self.records.indexes:
            offset = 0
            while True:
                batch = await self.bull.clean_failed(
                    cutoff, self.batch_size, records=self.records, index=index, offset=offset
                )
                failed += len(batch.job_ids)
                records += batch.records_removed
                dropped += batch.index_entries_dropped
                sample.extend(batch.job_ids[: SAMPLE_SIZE - len(sample)])
                offset += batch.records_kept
                if len(batch.job_ids) < self.batch_size and batch.examined < self.batch_size:
                    break
                await self._between_batches()
        completed = 0
        completed_cutoff = self.policy.completed_cutoff_ms(now_ms)
        if completed_cutoff is not None:
            while True:
                ids = await self.bull.clean(JobState.COMPLETED, completed_cutoff, self.batch_size)
                completed += len(ids)
                if len(ids) < self.batch_size:
                    break
                await self._between_batches()
        return self._report(
            now_ms,
            started,
            trigger=trigger,
            dry_run=False,
            failed=failed,
            records=records,
            completed=completed,
            dropped=dropped,
            sample=sample,
        )

    async def preview(self, now_ms: int, *, trigger: Trigger = "manual") -> CleanupReport:
        """What ``run(now_ms)`` would remove, read without changing anything (a dry run)."""
        started = time.monotonic()
        cutoff = self.policy.failed_cutoff_ms(now_ms)
        failed = int(await self.redis.zcount(self.bull.keys["failed"], 0, cutoff))
        sample = await self.redis.zrangebyscore(
            self.bull.keys["failed"], 0, cutoff, start=0, num=SAMPLE_SIZE
        )
        records = dropped = 0
        for index in self.records.indexes:
            offset = 0
            while True:
                entries = await self.failure_entries(cutoff, offset, self.batch_size, index=index)
                for entry in select_expired(
                    entries, now_ms, self.policy, queue=self.queue, prefix=self.prefix
                ):
                    if entry.dangling:
                        dropped += 1
                    else:
                        records += 1
                offset += len(entries)
                if len(entries) < self.batch_size:
                    break
        completed = 0
        completed_cutoff = self.policy.completed_cutoff_ms(now_ms)
        if completed_cutoff is not None:
            completed = int(
                await self.redis.zcount(self.bull.keys["completed"], 0, completed_cutoff)
            )
        return self._report(
            now_ms,
            started,
            trigger=trigger,
            dry_run=True,
            failed=failed,
            records=records,
            completed=completed,
            dropped=dropped,
            sample=[str(s) for s in sample],
        )

    async def failure_entries(
        self, cutoff_ms: int, offset: int, limit: int, *, index: str | None = None
    ) -> list[FailureEntry]:
        """One window of a failure index (the queue's own by default; failed at or before the
        cutoff), with each record's queue and its job's place in this queue's failed set."""
        raw: list[Any] = await self.redis.zrangebyscore(
            index or self.records.keys.index,
            "-inf",
            cutoff_ms,
            start=offset,
            num=limit,
            withscores=True,
        )
        window: list[tuple[str, float]] = [(str(k), float(v)) for k, v in raw]
        if not window:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for record_key, _ in window:
                pipe.hmget(record_key, ["job_id", "queue", "prefix"])
            fields: list[list[str | None]] = await pipe.execute()
        ours = [
            job_id
            for job_id, queue, prefix in fields
            if job_id is not None and queue == self.queue and prefix == self.prefix
        ]
        finished: dict[str, int | None] = {}
        if ours:
            scores = await self.redis.zmscore(self.bull.keys["failed"], ours)
            finished = {
                j: (None if s is None else int(s)) for j, s in zip(ours, scores, strict=True)
            }
        return [
            FailureEntry(
                record_key=str(record_key),
                failed_at_ms=int(score),
                queue=None if job_id is None else str(queue),
                prefix=None if job_id is None else str(prefix),
                job_finished_ms=finished.get(job_id) if job_id is not None else None,
            )
            for (record_key, score), (job_id, queue, prefix) in zip(window, fields, strict=True)
        ]
