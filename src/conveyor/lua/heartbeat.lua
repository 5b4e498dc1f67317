-- A worker's heartbeat on its queue, on Redis's own clock (so hosts' clocks do not matter):
-- sets the worker's score in the heartbeat set to now (ms). The one call per interval that
-- takes the judge lease (SET NX PX) also answers the members that have not beaten for
-- ARGV[2] ms (at most 100; the caller decides whether they are dead) and forgets members
-- silent for ARGV[4] ms, whose jobs BullMQ's stalled check has long recovered.
--
-- KEYS[1] the heartbeat set (ZSET: worker name -> last beat, ms)  KEYS[2] the judge lease
-- ARGV[1] the worker's name  ARGV[2] silent after (ms)  ARGV[3] lease (ms)  ARGV[4] forget after (ms)
-- Returns {now, name, score, name, score, ...} (only {now} without the lease).
if redis.replicate_commands then
  redis.replicate_commands()
end
local rcall = redis.call
local time = rcall("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
rcall("ZADD", KEYS[1], now, ARGV[1])
local reply = {now}
if not rcall("SET", KEYS[2], ARGV[1], "NX", "PX", ARGV[3]) then
  return reply
end
rcall("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. (now - tonumber(ARGV[4])))
local silent = rcall(
  "ZRANGEBYSCORE", KEYS[1], "-inf", "(" .. (now - tonumber(ARGV[2])), "WITHSCORES", "LIMIT", 0, 100
)
for _, value in ipairs(silent) do
  reply[#reply + 1] = value
end
return reply
