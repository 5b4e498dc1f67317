-- wrk script: POST /enqueue with one simulate job (the seed's request).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"simulate","data":{"duration_ms":2000,"fail_rate":0.1}}'
