"""A worker's part in schedules: as it takes a schedule's job, it creates the next run, as
Node.js BullMQ's worker does (``conveyor._bullmq.schedulers``), whoever made the schedule.

What happens if the process dies:
- before the next run is created: the job, locked, is recovered by the stalled-job check; the
  worker that takes it again creates the next run (the schedule still points at this slot);
- after: the job is recovered and run again (at-least-once), and creating the next run is a
  no-op, because BullMQ's script adds it only while the schedule points at the taken slot.
So each slot gets one next run, however many workers take or retake its job.
"""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError

from conveyor._bullmq import BullQueue, JobRecord
from conveyor._bullmq.repeatable import advance_legacy
from conveyor.backoff import capped_backoff
from conveyor.errors import ConveyorError
from conveyor.log import get_logger
from conveyor.worker.options import REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S
from conveyor.worker.stack import describe

log = get_logger("conveyor.worker")


class ScheduleRuns:
    """Creates the next run of the schedules whose jobs a worker takes."""

    def __init__(self, bull: BullQueue, lock_duration_ms: int) -> None:
        self._bull = bull
        self._lock_duration_ms = lock_duration_ms

    async def taken(self, job: JobRecord) -> None:
        """``job`` (which has a ``repeat_key``) was just taken: create its next run. Redis
        trouble is retried while the job's lock lasts; after that (or on any other error) the
        job still runs and the failure is logged: its stalled retake cannot help, as this one
        is taken (BullMQ's worker behaves the same)."""
        key = job.repeat_key
        if key is None:
            return
        # A job scheduler's hash has ``ic``; a BullMQ 5 repeatable's key (its legacy
        # ``name:id:end:tz:pattern``, or that key's md5) has none.
        legacy = not await self._bull.schedulers.is_scheduler(key)
        deadline = time.monotonic() + self._lock_duration_ms / 2000
        failures = 0
        while True:
            try:
                if legacy:  # BullMQ 5's repeatable jobs, as BullMQ 5's worker
                    next_id = await advance_legacy(self._bull, job)
                else:
                    next_id = await self._bull.schedulers.advance(job)
            except (RedisError, OSError) as exc:
                failures += 1
                if time.monotonic() > deadline:
                    log.error("schedule_next_failed", job_id=job.id, error=describe(exc))
                    return
                log.warning("redis_error", where="schedule_next", error=describe(exc))
                await asyncio.sleep(capped_backoff(failures, REDIS_RETRY_BASE_S, REDIS_RETRY_CAP_S))
                continue
            except (ConveyorError, ValueError) as exc:
                log.error("schedule_next_failed", job_id=job.id, error=describe(exc))
                return
            if next_id is not None:
                log.debug("schedule_next_created", schedule=key, job_id=next_id)
            return
