-- Walks one window of an index (records that failed at or before the cutoff, from
-- ``offset``) plus any record keys given explicitly, and deletes this queue's records whose
-- job is no longer in the failed set, with their index entries. A record whose job is still
-- failed is kept; another queue's is never touched; index entries whose record is gone are
-- dropped. ``keep_removed`` = "1" (the workers' reconciler) also keeps records of jobs
-- removed on failure and records of earlier versions without that mark (cleanup's
-- retention takes those); "0" (cleanup) removes them.
-- KEYS: the index walked, failed set, the queue's index, the legacy index.
-- ARGV: cutoff, offset, limit, queue, prefix, keep_removed, explicit record keys...
-- Answers {records removed, window entries kept, dangling entries dropped, examined}.
local walked, failedSet, indexKey, legacyIndex = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local queue, prefix, keepRemoved = ARGV[4], ARGV[5], ARGV[6] == "1"
local removed, kept, dangling = 0, 0, 0
local function consider(recordKey, explicit)
  local f = redis.call("HMGET", recordKey, "job_id", "queue", "prefix", "removed_on_fail")
  if not f[1] then
    if not explicit then
      redis.call("ZREM", walked, recordKey)
      dangling = dangling + 1
    end
    return
  end
  if f[2] ~= queue or f[3] ~= prefix or redis.call("ZSCORE", failedSet, f[1])
      or (keepRemoved and f[4] ~= "0") then
    if not explicit then kept = kept + 1 end
    return
  end
  redis.call("DEL", recordKey)
  redis.call("ZREM", indexKey, recordKey)
  redis.call("ZREM", legacyIndex, recordKey)
  removed = removed + 1
end
local examined = 0
if limit > 0 then
  local entries = redis.call("ZRANGEBYSCORE", walked, "-inf", cutoff, "LIMIT", offset, limit)
  examined = #entries
  for _, recordKey in ipairs(entries) do consider(recordKey, false) end
end
for i = 7, #ARGV do consider(ARGV[i], true) end
return {removed, kept, dangling, examined}
