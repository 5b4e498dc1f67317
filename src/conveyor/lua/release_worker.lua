-- Releases the jobs a dead worker still holds, at once, exactly as BullMQ's stalled-job check
-- (moveStalledJobsToWait) would once their locks expired: a job goes back to "wait" (RPUSH,
-- so it runs next) only if its lock is still this worker's, i.e. a token "{worker name}:{n}"
-- (Conveyor's tokens, worker.runner._next_token); it counts as a stall (HINCRBY stc, and a
-- deferred failure "defa" past the maximum unless it is a repeatable job), with BullMQ's
-- "waiting" and "stalled" events. A job whose lock another worker holds, or that has no lock
-- (the stalled check's), is left alone. Run with the paused-layout guard (scripts.py).
--
-- KEYS[1] active  KEYS[2] wait  KEYS[3] stalled  KEYS[4] meta  KEYS[5] paused  KEYS[6] marker
-- KEYS[7] events  KEYS[8] repeat  KEYS[9] Conveyor's heartbeat set of the queue
-- ARGV[1] the queue's key prefix "{prefix}:{queue}:"  ARGV[2] the worker's name
-- ARGV[3] max stalled count
-- ARGV[4] the heartbeat score the caller saw, or "" when the caller knows the worker is dead
--         (its supervisor reaped it): with a score, nothing happens unless the worker's
--         heartbeat still has exactly that score (it has not beaten since)
-- ARGV[5] "1" to forget the worker's heartbeat as well
-- Returns the released job ids, or false when the worker has beaten since.
local rcall = redis.call
local base, worker = ARGV[1], ARGV[2]
local maxStalled = tonumber(ARGV[3])
if ARGV[4] ~= "" then
  local score = rcall("ZSCORE", KEYS[9], worker)
  if not score or tonumber(score) ~= tonumber(ARGV[4]) then
    return false
  end
end
if ARGV[5] == "1" then
  rcall("ZREM", KEYS[9], worker)
end
local tokenPrefix = worker .. ":"
local width = #tokenPrefix
local released = {}
local active = rcall("LRANGE", KEYS[1], 0, -1)
if #active == 0 then
  return released
end
local maxEvents = rcall("HGET", KEYS[4], "opts.maxLenEvents") or 10000
rcall("XTRIM", KEYS[7], "MAXLEN", "~", maxEvents)
local attributes = rcall("HMGET", KEYS[4], "paused", "concurrency")
for _, jobId in ipairs(active) do
  local jobKey = base .. jobId
  local lockKey = jobKey .. ":lock"
  local token = rcall("GET", lockKey)
  if token and string.sub(token, 1, width) == tokenPrefix
      and string.match(string.sub(token, width + 1), "^%d+$") then
    rcall("DEL", lockKey)
    rcall("SREM", KEYS[3], jobId)
    if rcall("LREM", KEYS[1], 1, jobId) > 0 then
      local stalledCount = rcall("HINCRBY", jobKey, "stc", 1)
      local repeatable = false
      local schedulerId = rcall("HGET", jobKey, "rjk")
      if schedulerId then
        repeatable = rcall("EXISTS", KEYS[8] .. ":" .. schedulerId) == 1
          or rcall("ZSCORE", KEYS[8], schedulerId) ~= false
      end
      if stalledCount > maxStalled and not repeatable then
        rcall("HSET", jobKey, "defa", "job stalled more than allowable limit")
      end
      rcall("RPUSH", KEYS[2], jobId)
      local pausedOrMaxed = attributes[1] ~= false
      if not pausedOrMaxed and attributes[2] then
        pausedOrMaxed = rcall("LLEN", KEYS[1]) >= tonumber(attributes[2])
      end
      if not pausedOrMaxed then
        rcall("ZADD", KEYS[6], 0, "0")
      end
      rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId, "prev", "active")
      rcall("XADD", KEYS[7], "*", "event", "stalled", "jobId", jobId)
      released[#released + 1] = jobId
    end
  end
end
return released
