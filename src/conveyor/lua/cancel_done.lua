-- Run by a worker in the same MULTI as the move of a cancelled job to "failed"
-- (conveyor.worker.cancel): the job's cancel mark has done its work and goes, and the
-- cancellation is counted once the job really is failed (or was removed on failure).
-- KEYS: mark, job hash, failed set, stats totals.
-- ARGV: job id, the counter field ("cancelled:{name}").
redis.call("DEL", KEYS[1])
if redis.call("EXISTS", KEYS[2]) == 1 and not redis.call("ZSCORE", KEYS[3], ARGV[1]) then
  return 0
end
redis.call("HINCRBY", KEYS[4], ARGV[2], 1)
return 1
