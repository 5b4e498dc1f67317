-- A per-task limit (conveyor.worker.task_limits): may this job of a limited task start now?
-- Checked and taken in one script, so the limit holds across every process and host.
-- The running set holds the ids of the task's jobs that started; an id whose BullMQ lock
-- ({prefix}:{queue}:{jobId}:lock) is gone has finished, been retried, or lost its worker
-- (the lock expired): it is dropped, so a crash frees its slot when its lock expires.
-- The rate is BullMQ's fixed window: a counter whose first increment sets its expiry.
-- KEYS[1] the task's rate counter  KEYS[2] the task's running set
-- ARGV[1] job id  ARGV[2] rate max (0: none)  ARGV[3] rate window (ms)
-- ARGV[4] concurrency (0: none)  ARGV[5] the queue's key base ({prefix}:{queue}:)
-- Answers 0 when the job may start (its slot is taken), -1 when the task's concurrency is
-- reached, else the ms until the rate window ends.
local jobId = ARGV[1]
local maxJobs = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
if cap > 0 then
  -- This job's own id may still be there from an earlier run (retried since): not counted.
  local running = 0
  for _, member in ipairs(redis.call("SMEMBERS", KEYS[2])) do
    if member ~= jobId then
      if redis.call("EXISTS", ARGV[5] .. member .. ":lock") == 1 then
        running = running + 1
      else
        redis.call("SREM", KEYS[2], member)
      end
    end
  end
  if running >= cap then
    return -1
  end
end
if maxJobs > 0 then
  local count = tonumber(redis.call("GET", KEYS[1]) or "0") or 0
  if count >= maxJobs then
    local ttl = redis.call("PTTL", KEYS[1])
    if ttl > 0 then
      return ttl
    end
    redis.call("DEL", KEYS[1])
  end
  if redis.call("INCR", KEYS[1]) == 1 then
    redis.call("PEXPIRE", KEYS[1], ARGV[3])
  end
end
if cap > 0 then
  redis.call("SADD", KEYS[2], jobId)
end
return 0
