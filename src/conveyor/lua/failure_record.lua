-- Run in the same script call as the move to "failed" (a worker's, moveToFailed in
-- conveyor._bullmq.scripts; a cancel's, lua/cancel.lua), so the record and BullMQ's failed
-- set can never disagree: the record is written only when the job really is failed now (or was
-- removed on failure by removeOnFail, then marked so). A record of another queue found where
-- this one goes (only possible at the seed's ``failedJobs:{id}``, written there by an earlier
-- version for any queue) is moved to its own queue's key space first, never overwritten. The
-- same job's record at its legacy key is superseded and dropped.
-- A record with a legacy key apart from it lives in its queue's own key space, where no other
-- queue's record can be: only a record that shares its key with the legacy one is looked at.
-- KEYS: job hash, failed set, record, index, legacy record, legacy index.
-- ARGV: job id, name, queue, data, error, stack, attempts, failed_at, failed_at_ms, prefix,
-- then what follows "{prefix}:{queue}" in a queue's record keys and in its index key
-- (conveyor.keys.OTHER_QUEUE_RECORD_SUFFIXES); then "1" when the caller has just moved the
-- job to "failed" in the same script (it is failed now, unless removed on failure).
local jobKey, failedSet, recordKey, indexKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local legacyKey, legacyIndex = KEYS[5], KEYS[6]
local jobId, queue, prefix = ARGV[1], ARGV[3], ARGV[10]
local kept = redis.call("EXISTS", jobKey) == 1
if kept and ARGV[13] ~= "1" and not redis.call("ZSCORE", failedSet, jobId) then
  return 0
end
local f = {}
if legacyKey == recordKey then
  f = redis.call("HMGET", recordKey, "job_id", "queue", "prefix")
end
if f[1] and f[2] and f[3] and (f[2] ~= queue or f[3] ~= prefix) then
  local home = f[3] .. ":" .. f[2] .. ARGV[11]
  local score = redis.call("ZSCORE", legacyIndex, recordKey)
  redis.call("ZREM", legacyIndex, recordKey)
  if redis.call("EXISTS", home .. f[1]) == 1 then
    redis.call("DEL", recordKey)
  else
    redis.call("RENAME", recordKey, home .. f[1])
    if score then
      redis.call("ZADD", f[3] .. ":" .. f[2] .. ARGV[12], score, home .. f[1])
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
