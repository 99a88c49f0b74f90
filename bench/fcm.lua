-- wrk script for the push part: every request is one FCM HTTP v1 send, as NexMDM makes them.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer fake"
wrk.body = '{"message":{"token":"tok-000001","data":{"request_id":"bench-1","action":"sync"},"android":{"collapse_key":"sync","ttl":"86400s","priority":"normal"}}}'
