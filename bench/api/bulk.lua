-- wrk script: POST /enqueue/bulk with 100 simulate jobs per request.
local jobs = {}
for i = 1, 100 do
  jobs[i] = '{"name":"simulate","data":{"duration_ms":2000,"fail_rate":0.1}}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"jobs":[' .. table.concat(jobs, ",") .. ']}'
