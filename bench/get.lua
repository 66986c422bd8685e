-- wrk script: GET one product by id with a bearer token (the full read pipeline).
-- The request is the same every time, so it is set once: wrk then sends it from a
-- buffer it built at the start, as it does for bare hyper's plain GET. (A `request()`
-- function would build it in Lua for every request: a load generator that costs more
-- per request than the baseline's, on the cores the two servers share.)
wrk.method = "GET"
wrk.path = os.getenv("LITHAIR_PATH")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("LITHAIR_TOKEN")
