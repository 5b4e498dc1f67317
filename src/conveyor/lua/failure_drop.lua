-- For jobs seen leaving "failed" (Conveyor's retry or remove, or an event of another tool):
-- drops each one's record, at its key and its legacy key, where the record is this queue's
-- and this job's and the job is not failed (again) by now. A record marked removed_on_fail
-- stays: it describes an earlier job with the same id, kept until cleanup's retention.
-- KEYS: failed set, index, legacy index, then per job: record, legacy record.
-- ARGV: queue, prefix, then the job ids.
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
