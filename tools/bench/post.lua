-- tools/bench/post.lua — wrk script for tools/bench.sh.
--
-- Every request is a POST of one line of BENCH_BODIES (a file with one JSON
-- body per line), taken in turn so a pool of sealed cards is cycled through.
-- The same file and headers go to the sandbox, to nginx and to flairgw, so
-- the three measurements differ only in what answers. No response()
-- callback: parsing every answer in Lua would make wrk the bottleneck; wrk
-- itself counts non-2xx answers, which done() reports.
--
-- done() prints one machine-readable line that bench.sh parses:
--   BENCH requests=N seconds=S non2xx=N sockerr=N p50=US p99=US p999=US

local bodies, n, i = {}, 0, 0
local path = os.getenv("BENCH_PATH") or "/v1/transactions"

local f = assert(io.open(assert(os.getenv("BENCH_BODIES"), "BENCH_BODIES unset"), "r"))
for line in f:lines() do
  if #line > 0 then
    n = n + 1
    bodies[n] = line
  end
end
f:close()
assert(n > 0, "BENCH_BODIES is empty")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "flair_dev_key")

-- Precompute the requests once per thread: formatting per request costs
-- wrk CPU that would be taken from the load generator's core. In init(),
-- not at load time, because wrk.host (the Host header nginx insists on) is
-- only set by then.
local reqs = {}
init = function(args)
  for k = 1, n do
    reqs[k] = wrk.format("POST", path, nil, bodies[k])
  end
end

request = function()
  i = i % n + 1
  return reqs[i]
end

-- Fixed offered load: with BENCH_THINK_MS set, each connection waits a
-- random think time (exponential, mean BENCH_THINK_MS, capped at 8x) before
-- each request, so C connections offer about C * 1000 / BENCH_THINK_MS
-- requests per second, spread out rather than in step. The seed is fixed so
-- runs repeat. (h2load --rps was tried first: its clients fire on aligned
-- timers, so the SUT sees bursts of C requests and the latency measured is
-- queueing behind the burst, not the service.)
local think = tonumber(os.getenv("BENCH_THINK_MS") or "")
if think ~= nil and think > 0 then
  math.randomseed(8)
  delay = function()
    local d = -think * math.log(1 - math.random())
    if d > 8 * think then d = 8 * think end
    return math.floor(d + 0.5)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f non2xx=%d sockerr=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
