-- wrk script: POST /enqueue/bulk with 100 no-op jobs per request.
local jobs = {}
for i = 1, 100 do
  jobs[i] = '{"name":"noop","data":{}}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"jobs":[' .. table.concat(jobs, ",") .. ']}'
