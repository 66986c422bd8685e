-- wrk script: GET products by id with a bearer token, cycling through the ids of a file
-- (one per line): reads of many different records, as a service answers them when no
-- record is asked for twice in a row.
-- Needs LITHAIR_TOKEN and LITHAIR_IDS (the file of ids).
-- Every request is built once, at the start: per request, the script only hands the next
-- one to wrk (building it in Lua each time made this load generator cost more per request
-- than bare hyper's, on the cores the servers share).
local auth = {["Authorization"] = "Bearer " .. os.getenv("LITHAIR_TOKEN")}
local requests = {}
for line in io.lines(os.getenv("LITHAIR_IDS")) do
  requests[#requests + 1] = wrk.format("GET", "/api/products/" .. line, auth)
end
local at = 0

function request()
  at = at % #requests + 1
  return requests[at]
end
