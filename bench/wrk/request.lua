-- One request, repeated: GET (or WRK_METHOD) with "Authorization: Bearer
-- WRK_TOKEN" when set. done() prints the machine-readable WRKRESULT line that
-- bench/run.sh reads (the same fields as bench/wrk/patch_many.lua).
-- Env: WRK_METHOD (default GET), WRK_TOKEN (optional).
wrk.method = os.getenv("WRK_METHOD") or "GET"
local token = os.getenv("WRK_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
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
