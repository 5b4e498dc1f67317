-- wrk script: POST /enqueue with one no-op job.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"noop","data":{}}'
