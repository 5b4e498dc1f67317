"""The failure-record store: Conveyor's own hash per permanently failed job.

Where a record lives is ``conveyor.jobs.FailureKeys`` (``failedJobs:{jobId}`` for the seed's
queue, ``{prefix}:{queue}:conveyor:failed:{jobId}`` for every other one). Every write and
delete here is one Lua script that checks the record's ``job_id``, ``queue`` and ``prefix``
fields first, so no call for one queue can overwrite or delete another queue's record, even
where an earlier version's keys (``FailureKeys.legacy_record``) are shared.

The rule the scripts keep: a record exists exactly while its job is failed for good. The
worker writes it in the same MULTI as the move to BullMQ's failed set; Conveyor's retry and
remove drop it in the same MULTI as their move; moves made by other BullMQ tools (Node's
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

from conveyor.jobs import FailureKeys

#: Written in the same MULTI as the move to "failed", so the record and BullMQ's failed set
#: can never disagree: the record is written only when the job really is failed now (or was
#: removed on failure by removeOnFail, then marked so). A record of another queue found where
#: this one goes (only possible at the seed's ``failedJobs:{id}``, written there by an earlier
#: version for any queue) is moved to its own queue's key space first, never overwritten. The
#: same job's record at its legacy key is superseded and dropped.
#: KEYS: job hash, failed set, record, index, legacy record, legacy index.
#: ARGV: job id, name, queue, data, error, stack, attempts, failed_at, failed_at_ms, prefix.
RECORD_LUA = """
local jobKey, failedSet, recordKey, indexKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local legacyKey, legacyIndex = KEYS[5], KEYS[6]
local jobId, queue, prefix = ARGV[1], ARGV[3], ARGV[10]
local kept = redis.call("EXISTS", jobKey) == 1
if kept and not redis.call("ZSCORE", failedSet, jobId) then
  return 0
end
local f = redis.call("HMGET", recordKey, "job_id", "queue", "prefix")
if f[1] and f[2] and f[3] and (f[2] ~= queue or f[3] ~= prefix) then
  local home = f[3] .. ":" .. f[2] .. ":conveyor:failed:"
  local score = redis.call("ZSCORE", legacyIndex, recordKey)
  redis.call("ZREM", legacyIndex, recordKey)
  if redis.call("EXISTS", home .. f[1]) == 1 then
    redis.call("DEL", recordKey)
  else
    redis.call("RENAME", recordKey, home .. f[1])
    if score then
      redis.call("ZADD", f[3] .. ":" .. f[2] .. ":conveyor:failed-index", score, home .. f[1])
    end
  end
end
redis.call("HSET", recordKey, "job_id", jobId, "name", ARGV[2], "queue", queue,
  "data", ARGV[4], "error", ARGV[5], "stack", ARGV[6], "attempts", ARGV[7],
  "failed_at", ARGV[8], "failed_at_ms", ARGV[9], "prefix", prefix,
  "removed_on_fail", kept and "0" or "1")
redis.call("ZADD", indexKey, ARGV[9], recordKey)
if legacyKey ~= recordKey then
  local g = redis.call("HMGET", legacyKey, "job_id", "queue", "prefix")
  if g[1] == jobId and g[2] == queue and g[3] == prefix then
    redis.call("DEL", legacyKey)
    redis.call("ZREM", legacyIndex, legacyKey)
  end
end
return 1
"""

#: For jobs seen leaving "failed" (Conveyor's retry or remove, or an event of another tool):
#: drops each one's record, at its key and its legacy key, where the record is this queue's
#: and this job's and the job is not failed (again) by now. A record marked removed_on_fail
#: stays: it describes an earlier job with the same id, kept until cleanup's retention.
#: KEYS: failed set, index, legacy index, then per job: record, legacy record.
#: ARGV: queue, prefix, then the job ids.
DROP_LUA = """
local failedSet, indexKey, legacyIndex = KEYS[1], KEYS[2], KEYS[3]
local queue, prefix = ARGV[1], ARGV[2]
local dropped = 0
local function drop(recordKey, index, jobId)
  local f = redis.call("HMGET", recordKey, "job_id", "queue", "prefix", "removed_on_fail")
  if f[1] == jobId and f[2] == queue and f[3] == prefix and f[4] ~= "1" then
    redis.call("ZREM", index, recordKey)
    dropped = dropped + redis.call("DEL", recordKey)
  end
end
for i = 3, #ARGV do
  local jobId = ARGV[i]
  if not redis.call("ZSCORE", failedSet, jobId) then
    local k = 4 + (i - 3) * 2
    drop(KEYS[k], indexKey, jobId)
    if KEYS[k + 1] ~= KEYS[k] then drop(KEYS[k + 1], legacyIndex, jobId) end
  end
end
return dropped
"""

#: Walks one window of an index (records that failed at or before the cutoff, from
#: ``offset``) plus any record keys given explicitly, and deletes this queue's records whose
#: job is no longer in the failed set, with their index entries. A record whose job is still
#: failed is kept; another queue's is never touched; index entries whose record is gone are
#: dropped. ``keep_removed`` = "1" (the workers' reconciler) also keeps records of jobs
#: removed on failure and records of earlier versions without that mark (cleanup's
#: retention takes those); "0" (cleanup) removes them.
#: KEYS: the index walked, failed set, the queue's index, the legacy index.
#: ARGV: cutoff, offset, limit, queue, prefix, keep_removed, explicit record keys...
#: Answers {records removed, window entries kept, dangling entries dropped, examined}.
SWEEP_LUA = """
local walked, failedSet, indexKey, legacyIndex = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local queue, prefix, keepRemoved = ARGV[4], ARGV[5], ARGV[6] == "1"
local removed, kept, dangling = 0, 0, 0
local function consider(recordKey, explicit)
  local f = redis.call("HMGET", recordKey, "job_id", "queue", "prefix", "removed_on_fail")
  if not f[1] then
    if not explicit then
      redis.call("ZREM", walked, recordKey)
      dangling = dangling + 1
    end
    return
  end
  if f[2] ~= queue or f[3] ~= prefix or redis.call("ZSCORE", failedSet, f[1])
      or (keepRemoved and f[4] ~= "0") then
    if not explicit then kept = kept + 1 end
    return
  end
  redis.call("DEL", recordKey)
  redis.call("ZREM", indexKey, recordKey)
  redis.call("ZREM", legacyIndex, recordKey)
  removed = removed + 1
end
local examined = 0
if limit > 0 then
  local entries = redis.call("ZRANGEBYSCORE", walked, "-inf", cutoff, "LIMIT", offset, limit)
  examined = #entries
  for _, recordKey in ipairs(entries) do consider(recordKey, false) end
end
for i = 7, #ARGV do consider(ARGV[i], true) end
return {removed, kept, dangling, examined}
"""


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
        self.record_script: AsyncScript = redis.register_script(RECORD_LUA)
        self._drop = redis.register_script(DROP_LUA)
        self._sweep = redis.register_script(SWEEP_LUA)

    @property
    def indexes(self) -> list[str]:
        """The queue's index, then the legacy one when it is another key."""
        own, legacy = self.keys.index, self.keys.legacy_index
        return [own] if own == legacy else [own, legacy]

    def record_keys(self, job_id: str, job_key: str) -> list[str]:
        """The KEYS of ``RECORD_LUA`` for one job."""
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
        """One sweep step (see ``SWEEP_LUA``); with ``pipe`` only queued (answers None)."""
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
