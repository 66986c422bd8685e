-- wrk script: POST a new shop Product per request, each with a unique sku.
-- Needs LITHAIR_TOKEN (an editor token) and LITHAIR_CATEGORY (an existing category id).
local token = os.getenv("LITHAIR_TOKEN")
local category = os.getenv("LITHAIR_CATEGORY")
local threads = 0
local counter = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"name":"Bench item","sku":"B%s-%d-%d","price":9.5,"stock":3,"tags":["a","b"],"category":"%s"}',
    os.getenv("LITHAIR_RUN") or "0", tid, counter, category)
  return wrk.format("POST", "/api/products",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
