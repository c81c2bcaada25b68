-- PATCH over many devices: each request changes a device (a new name), so
-- every 2xx is a real, durable write. Ids come from WRK_IDS_FILE.
-- Env: WRK_TOKEN (admin), WRK_IDS_FILE. Prints the same WRKRESULT line as
-- bench/wrk/request.lua.
local token = os.getenv("WRK_TOKEN")
local ids = {}
for line in io.lines(os.getenv("WRK_IDS_FILE")) do
  if line ~= "" then ids[#ids + 1] = line end
end
local counter = 0
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

request = function()
  counter = counter + 1
  local id = ids[((counter * 7919) + (tid or 0) * 104729) % #ids + 1]
  local body = string.format('{"name":"bench %d-%d","pimEnabled":%s}', tid or 0, counter,
    counter % 2 == 0 and "true" or "false")
  return wrk.format("PATCH", "/api/tenant/devices/" .. id,
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT rps=%.1f avg_ms=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d non2xx=%d sock_errors=%d\n",
    summary.requests / secs, latency.mean / 1000, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    e.status, e.connect + e.read + e.write + e.timeout))
end
