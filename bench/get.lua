-- wrk script: GET one product by id with a bearer token (the full read pipeline).
local token = os.getenv("LITHAIR_TOKEN")
local path = os.getenv("LITHAIR_PATH")

function request()
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
