"""The failure-record store: Conveyor's own hash per permanently failed job.

Where a record lives is ``conveyor.keys.FailureKeys`` (``failedJobs:{jobId}`` for the seed's
queue, ``{prefix}:{queue}:conveyor:failed:{jobId}`` for every other one). Every write and
delete here is one Lua script that checks the record's ``job_id``, ``queue`` and ``prefix``
fields first, so no call for one queue can overwrite or delete another queue's record, even
where an earlier version's keys (``FailureKeys.legacy_record``) are shared.

The rule the scripts keep: a record exists exactly while its job is failed for good. The
worker writes it in the same script call as the move to BullMQ's failed set; Conveyor's
retry and remove drop it in the same MULTI as their move; moves made by other BullMQ tools (Node's
``job.retry()``, Bull Board, ``queue.clean``) are caught up by ``drop`` (from the queue's event
stream) and ``sweep`` (a bounded walk of the index), which the workers run on a timer. The one
exception: a job that BullMQ removed at the moment it failed (``removeOnFail``) keeps its
record, marked ``removed_on_fail=1``, until cleanup's retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from conveyor import lua
from conveyor.keys import FailureKeys


@dataclass(frozen=True)
class SweepResult:
    """What one window of a sweep did."""

    removed: int
    #: Entries of the window that stay (another queue's, still failed, or kept until retention).
    kept: int
    #: Index entries dropped because their record no longer existed.
    dangling: int
    #: Entries the window looked at (equal to the limit: there may be more).
    examined: int


class FailureStore:
    """The failure records of one queue, on one Redis client."""

    def __init__(self, redis: Redis, keys: FailureKeys, *, failed_set: str) -> None:
        self.redis = redis
        self.keys = keys
        #: BullMQ's failed set of the queue (``{prefix}:{queue}:failed``).
        self.failed_set = failed_set
        self._drop = redis.register_script(lua.source("failure_drop"))
        self._sweep = redis.register_script(lua.source("failure_sweep"))

    @property
    def indexes(self) -> list[str]:
        """The queue's index, then the legacy one when it is another key."""
        own, legacy = self.keys.index, self.keys.legacy_index
        return [own] if own == legacy else [own, legacy]

    def record_keys(self, job_id: str, job_key: str) -> list[str]:
        """The KEYS of ``lua/failure_record.lua`` for one job."""
        k = self.keys
        return [
            job_key,
            self.failed_set,
            k.record(job_id),
            k.index,
            k.legacy_record(job_id),
            k.legacy_index,
        ]

    async def read(self, job_id: str) -> dict[str, str] | None:
        """The job's record, if it has one (see ``locate``)."""
        found = await self.locate(job_id)
        return found[1] if found is not None else None

    async def locate(self, job_id: str) -> tuple[str, dict[str, str]] | None:
        """The job's record and its key: at its key, else at its legacy key; only a record
        whose ``job_id``, ``queue`` and ``prefix`` fields are this queue's and this job's."""
        keys = [self.keys.record(job_id)]
        if self.keys.legacy_record(job_id) != keys[0]:
            keys.append(self.keys.legacy_record(job_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            found: list[dict[Any, Any]] = await pipe.execute()
        for key, raw in zip(keys, found, strict=True):
            record = {str(k): str(v) for k, v in raw.items()}
            if (
                record.get("job_id") == job_id
                and record.get("queue") == self.keys.queue
                and record.get("prefix", self.keys.prefix) == self.keys.prefix
            ):
                return key, record
        return None

    def _drop_call(self, job_ids: list[str]) -> tuple[list[str], list[Any]]:
        k = self.keys
        keys = [self.failed_set, k.index, k.legacy_index]
        for job_id in job_ids:
            keys += [k.record(job_id), k.legacy_record(job_id)]
        return keys, [k.queue, k.prefix, *job_ids]

    async def forget(self, job_id: str, pipe: Pipeline) -> None:
        """Queue on ``pipe`` (after the move that took the job out of "failed"): drop the job's
        record unless the job is failed again by then."""
        keys, args = self._drop_call([job_id])
        await self._drop(keys=keys, args=args, client=pipe)

    async def drop(self, job_ids: list[str]) -> int:
        """Drop the records of these jobs that have left the failed set; answers how many."""
        if not job_ids:
            return 0
        keys, args = self._drop_call(job_ids)
        return int(await self._drop(keys=keys, args=args))

    def sweep_call(
        self,
        index: str,
        *,
        cutoff_ms: int | str = "+inf",
        offset: int = 0,
        limit: int = 0,
        keep_removed: bool = True,
        record_keys: list[str] | None = None,
    ) -> tuple[AsyncScript, list[str], list[Any]]:
        """The script, KEYS and ARGV of one sweep step (to run now or inside a MULTI)."""
        k = self.keys
        keys = [index, self.failed_set, k.index, k.legacy_index]
        args: list[Any] = [cutoff_ms, offset, limit, k.queue, k.prefix]
        args += ["1" if keep_removed else "0", *(record_keys or [])]
        return self._sweep, keys, args

    async def sweep(
        self,
        index: str,
        *,
        cutoff_ms: int | str = "+inf",
        offset: int = 0,
        limit: int = 0,
        keep_removed: bool = True,
        record_keys: list[str] | None = None,
        pipe: Pipeline | None = None,
    ) -> SweepResult | None:
        """One sweep step (``lua/failure_sweep.lua``); with ``pipe`` only queued (answers None)."""
        script, keys, args = self.sweep_call(
            index,
            cutoff_ms=cutoff_ms,
            offset=offset,
            limit=limit,
            keep_removed=keep_removed,
            record_keys=record_keys,
        )
        raw = await script(keys=keys, args=args, client=pipe)
        if pipe is not None:
            return None
        return parse_sweep(raw)


def parse_sweep(raw: Any) -> SweepResult:
    removed, kept, dangling, examined = (int(n) for n in raw)
    return SweepResult(removed, kept, dangling, examined)
