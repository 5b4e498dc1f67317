-- Record a run; for a scheduled run also move last-run forward; then release the lease.
-- A last-run at the key of versions before conveyor.keys' layout is kept in step while it
-- exists (never created), so a replica of such a version, during a rolling upgrade, sees the
-- run and does not repeat it; both leases (the old one is taken too, see CleanupKeys) go.
-- KEYS: lease, last-run, runs, legacy lease, legacy last-run.
-- ARGV: lease token ("" for none), run time ("" for a manual run), run record, runs kept.
local leaseKey, lastRunKey, runsKey = KEYS[1], KEYS[2], KEYS[3]
local legacyLease, legacyLastRun = KEYS[4], KEYS[5]
local function moveForward(key)
  local previous = tonumber(redis.call("GET", key) or "0") or 0
  if tonumber(ARGV[2]) > previous then
    redis.call("SET", key, ARGV[2])
  end
end
if ARGV[2] ~= "" then
  moveForward(lastRunKey)
  if redis.call("EXISTS", legacyLastRun) == 1 then
    moveForward(legacyLastRun)
  end
end
redis.call("LPUSH", runsKey, ARGV[3])
redis.call("LTRIM", runsKey, 0, tonumber(ARGV[4]) - 1)
if ARGV[1] ~= "" then
  for _, key in ipairs({leaseKey, legacyLease}) do
    if redis.call("GET", key) == ARGV[1] then
      redis.call("DEL", key)
    end
  end
end
return 1
