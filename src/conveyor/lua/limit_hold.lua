-- Hold the queue back for ARGV[1] ms: BullMQ's manual rate limit (what Node's
-- queue.rateLimit(ms) writes: the limiter key set to Number.MAX_SAFE_INTEGER with that expiry),
-- except that a longer hold already running is kept rather than shortened.
-- KEYS[1] the queue's limiter key.  ARGV[1] hold (ms).  Answers the hold's remaining ms.
local key = KEYS[1]
local hold = tonumber(ARGV[1])
local counter = tonumber(redis.call("GET", key) or "0") or 0
local ttl = redis.call("PTTL", key)
if counter < 9007199254740991 or ttl < hold then
  redis.call("SET", key, "9007199254740991", "PX", hold)
  ttl = hold
end
return ttl
