-- wrk script: GET products by id with a bearer token, cycling through the ids of a file
-- (one per line): reads of many different records, as a service answers them when no
-- record is asked for twice in a row.
-- Needs LITHAIR_TOKEN and LITHAIR_IDS (the file of ids).
local token = os.getenv("LITHAIR_TOKEN")
local ids = {}
for line in io.lines(os.getenv("LITHAIR_IDS")) do
  ids[#ids + 1] = line
end
local at = 0

function request()
  at = at % #ids + 1
  return wrk.format("GET", "/api/products/" .. ids[at], {["Authorization"] = "Bearer " .. token})
end
