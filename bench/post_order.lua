-- wrk script: POST {"name", "total", "placed_at"} to LITHAIR_PATH per request (the
-- projection bench: the orders fall on 28 days). Needs LITHAIR_TOKEN.
local token = os.getenv("LITHAIR_TOKEN")
local path = os.getenv("LITHAIR_PATH")
local counter = 0

function request()
  counter = counter + 1
  local body = string.format('{"name":"Bench %d","total":%d.5,"placed_at":"2026-11-%02dT10:00:00Z"}',
    counter, counter % 1000, counter % 28 + 1)
  return wrk.format("POST", path,
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
