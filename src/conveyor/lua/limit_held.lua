-- BullMQ's manual rate limit (Node's queue.rateLimit(ms), Conveyor's RateLimited) sets the
-- queue's limiter key to Number.MAX_SAFE_INTEGER for the hold. BullMQ's moveToActive obeys it
-- only when a rate limit applies (a queue-wide `max` or the worker's limiter); Conveyor's
-- workers run this check before moveToActive and moveToFinished's fetch of the next job, so
-- a hold stops every Conveyor worker of the queue, limiter or not. Reads only.
-- Answers the hold's remaining ms, 0 when there is none.
local function conveyorLimitHeld(limiterKey)
  local counter = redis.call("GET", limiterKey)
  if counter and tonumber(counter) and tonumber(counter) >= 9007199254740991 then
    local ttl = redis.call("PTTL", limiterKey)
    if ttl > 0 then
      return ttl
    end
  end
  return 0
end
