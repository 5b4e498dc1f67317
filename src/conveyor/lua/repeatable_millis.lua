-- A legacy repeatable job (BullMQ 5's Queue.add with `repeat`) moves on to its next run:
-- BullMQ 5's updateRepeatableJobMillis-1.lua as Node.js BullMQ 5.81 ships it (the Python
-- `bullmq` package does not), so a Conveyor worker moves it exactly as a Node 5 worker does
-- (conveyor._bullmq.repeatable).
--
-- KEYS[1] the queue's 'repeat' sorted set
-- ARGV[1] next run (ms)
-- ARGV[2] the repeatable's key (md5 of the legacy key, or the user's `repeat.key`)
-- ARGV[3] the legacy key `name:jobId:endDate:tz:pattern|every`
-- Returns the key that is in the set (now scored with the next run), '' when neither is:
-- the repeatable was removed, and no next run is made.
local rcall = redis.call
if rcall("ZSCORE", KEYS[1], ARGV[2]) then
  rcall("ZADD", KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
elseif rcall("ZSCORE", KEYS[1], ARGV[3]) ~= false then
  rcall("ZADD", KEYS[1], ARGV[1], ARGV[3])
  return ARGV[3]
end
return ''
