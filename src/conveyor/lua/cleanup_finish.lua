-- Record a run; for a scheduled run also move last-run forward; then release the lease.
local leaseKey, lastRunKey, runsKey = KEYS[1], KEYS[2], KEYS[3]
if ARGV[2] ~= "" then
  local previous = tonumber(redis.call("GET", lastRunKey) or "0") or 0
  if tonumber(ARGV[2]) > previous then
    redis.call("SET", lastRunKey, ARGV[2])
  end
end
redis.call("LPUSH", runsKey, ARGV[3])
redis.call("LTRIM", runsKey, 0, tonumber(ARGV[4]) - 1)
if ARGV[1] ~= "" and redis.call("GET", leaseKey) == ARGV[1] then
  redis.call("DEL", leaseKey)
end
return 1
