-- Cancel one job, atomically, whatever state it is in (conveyor._bullmq.cancel):
-- - waiting, paused, delayed, prioritized or waiting for children: it is failed now, as a
--   permanent failure is (BullMQ's failed set, failedReason, finishedOn, a "failed" event, its
--   deduplication key released, its failure record written by write_record, which is
--   lua/failure_record.lua prepended as a function), and counted;
-- - active: the durable mark {prefix}:{queue}:conveyor:cancel:{jobId} is set (with a ttl) for
--   the worker that runs it, which stops the handler and fails the job; the request also goes
--   on the job hash (cvCancel), so a worker that takes the job again after a crash fails it at
--   once instead of running it;
-- - completed, or failed for another reason: nothing changes (a conflict);
-- - failed by an earlier cancel, or active and marked already: nothing changes (idempotent).
-- KEYS: 1 job hash, 2 wait, 3 paused, 4 active, 5 delayed, 6 prioritized, 7 waiting-children,
--   8 completed, 9 failed, 10 events, 11 meta, 12 mark, 13 stats totals,
--   14-19 the failure record's KEYS (FailureStore.record_keys).
-- ARGV: 1 job id, 2 the request (JSON), 3 failedReason, 4 now (ms), 5 mark ttl (ms),
--   6 now (ISO 8601), 7 prefix, 8-9 OTHER_QUEUE_RECORD_SUFFIXES, 10 queue, 11 the queue's
--   key base "{prefix}:{queue}:", 12 the counter field's start ("cancelled:").
-- Returns {outcome, state}: outcome "cancelled", "marked", "pending", "done", "conflict" or
-- "missing"; state the job's state when the call came.
local jobKey, jobId = KEYS[1], ARGV[1]
if redis.call("EXISTS", jobKey) == 0 then
  return {"missing", ""}
end
local already = redis.call("HEXISTS", jobKey, "cvCancel") == 1
if redis.call("ZSCORE", KEYS[8], jobId) then
  return {"conflict", "completed"}
end
if redis.call("ZSCORE", KEYS[9], jobId) then
  return {already and "done" or "conflict", "failed"}
end

local function inList(key)
  local found = redis.pcall("LPOS", key, jobId)
  if type(found) == "table" and found.err then -- Redis before 6.0.6: no LPOS
    for _, member in ipairs(redis.call("LRANGE", key, 0, -1)) do
      if member == jobId then
        return true
      end
    end
    return false
  end
  return found ~= false and found ~= nil
end

if inList(KEYS[4]) then
  if already and redis.call("EXISTS", KEYS[12]) == 1 then
    return {"pending", "active"}
  end
  redis.call("SET", KEYS[12], ARGV[2], "PX", ARGV[5])
  redis.call("HSET", jobKey, "cvCancel", ARGV[2])
  return {already and "pending" or "marked", "active"}
end

local state = nil
if redis.call("ZREM", KEYS[5], jobId) == 1 then
  state = "delayed"
elseif redis.call("ZREM", KEYS[6], jobId) == 1 then
  state = "prioritized"
elseif redis.call("ZREM", KEYS[7], jobId) == 1 then
  state = "waiting-children"
elseif redis.call("LREM", KEYS[2], 1, jobId) == 1 then
  state = "waiting"
elseif redis.call("LREM", KEYS[3], 1, jobId) == 1 then
  state = "paused"
end
if not state then
  return {"conflict", "unknown"}
end

local now = tonumber(ARGV[4])
redis.call("HSET", jobKey, "failedReason", ARGV[3], "finishedOn", now, "cvCancel", ARGV[2])
redis.call("ZADD", KEYS[9], now, jobId)
local maxEvents = redis.call("HGET", KEYS[11], "opts.maxLenEvents") or 10000
redis.call("XADD", KEYS[10], "MAXLEN", "~", maxEvents, "*", "event", "failed", "jobId", jobId,
  "failedReason", ARGV[3], "prev", state)

-- As BullMQ does when a job finishes: its deduplication id is free again (simple mode).
local fields = redis.call("HMGET", jobKey, "deid", "name", "data", "atm")
if fields[1] then
  local dedupKey = ARGV[11] .. "de:" .. fields[1]
  local pttl = redis.call("PTTL", dedupKey)
  if pttl == 0 or (pttl == -1 and redis.call("GET", dedupKey) == jobId) then
    redis.call("DEL", dedupKey)
  end
end

write_record({KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18], KEYS[19]},
  {jobId, fields[2] or "", ARGV[10], fields[3] or "{}", ARGV[3], "", fields[4] or "0", ARGV[6],
   ARGV[4], ARGV[7], ARGV[8], ARGV[9]})
redis.call("HINCRBY", KEYS[13], ARGV[12] .. (fields[2] or ""), 1)
return {"cancelled", state}
