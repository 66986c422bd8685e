-- wrk script: POST {"name", "total"} to LITHAIR_PATH per request (the lifecycle bench).
-- Needs LITHAIR_TOKEN (a token that may create there).
local token = os.getenv("LITHAIR_TOKEN")
local path = os.getenv("LITHAIR_PATH")
local counter = 0

function request()
  counter = counter + 1
  local body = string.format('{"name":"Bench %d","total":%d.5}', counter, counter % 1000)
  return wrk.format("POST", path,
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
