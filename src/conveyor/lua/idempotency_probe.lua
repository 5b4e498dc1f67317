-- Reads each probed job hash: its fingerprint; for a job made before fingerprints (or by
-- another tool) its name and data, to compare the old way; false when there is no job.
local out = {}
for i, key in ipairs(KEYS) do
  local row = redis.call("HMGET", key, "conveyorIdem", "name")
  if row[1] then
    out[i] = row[1]
  elseif row[2] then
    out[i] = {row[2], redis.call("HGET", key, "data") or ""}
  else
    out[i] = false
  end
end
return out
