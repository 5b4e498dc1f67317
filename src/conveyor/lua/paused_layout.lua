-- Node.js BullMQ before 6 keeps the waiting jobs of a paused queue in a "paused" list: its
-- pause RENAMEs wait to paused, its resume RENAMEs paused back to wait (overwriting wait), and
-- while paused it adds to "paused". The pinned scripts (BullMQ 6's) leave jobs in "wait" while
-- paused, so a BullMQ 5 resume would overwrite them. After each script that can put a job in
-- "wait" (or pause), this guard runs in the same script call, so nothing can come between:
-- while the queue is paused it moves "wait" into "paused" (the BullMQ 5 layout, which BullMQ 6
-- reads too: its getters count the list as paused and its resume moves it back), unless meta
-- says the last Node Queue to open the queue was BullMQ 6 or newer and no "paused" list
-- exists (then BullMQ 6's own layout stays). Not paused, it costs one HMGET; none after
-- moveToActive and moveToFinished when their own read of meta said the queue is not paused
-- (conveyor._bullmq.scripts). After Conveyor's own resume it also moves what BullMQ's resume
-- left in "paused" (it moves 7,000 per call).
local function conveyorPausedLayout(metaKey, resuming)
  local rcall = redis.call
  local meta = rcall("HMGET", metaKey, "paused", "version")
  if not meta[1] and not resuming then return end
  local base = string.sub(metaKey, 1, -5)
  local waitKey, pausedKey = base .. "wait", base .. "paused"
  if not meta[1] then
    while rcall("EXISTS", pausedKey) == 1 do
      if rcall("EXISTS", waitKey) == 0 then
        rcall("RENAME", pausedKey, waitKey)
      else
        local jobs = rcall("LRANGE", pausedKey, 0, 6999)
        rcall("RPUSH", waitKey, unpack(jobs))
        rcall("LTRIM", pausedKey, #jobs, -1)
      end
    end
    return
  end
  local pausedExists = rcall("EXISTS", pausedKey) == 1
  if not pausedExists and meta[2] then
    local major = tonumber(string.match(meta[2], "^bullmq:(%d+)%."))
    if major and major >= 6 then return end
  end
  local waiting = rcall("LLEN", waitKey)
  if waiting == 0 then return end
  if not pausedExists then
    rcall("RENAME", waitKey, pausedKey)
    return
  end
  for _ = 1, waiting do
    rcall("RPOPLPUSH", waitKey, pausedKey)
  end
end
