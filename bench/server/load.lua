-- wrk script for mue-server's load benchmark (bench/server/load.sh): POSTs JSON request bodies,
-- cycling through the files given after `--`, and prints throughput and latency percentiles.
--   wrk -t1 -c8 -d15s -s bench/server/load.lua http://127.0.0.1:PORT/v1/entail -- BODY.json ...
local bodies = {}
local next_body = 0

function init(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
  assert(#bodies > 0, "give request body files after --")
  -- Threads start at different bodies so that they do not send the same image together.
  next_body = math.random(#bodies) - 1
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[next_body])
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read +
              summary.errors.write + summary.errors.timeout
  io.write(string.format(
      "RESULT requests %d errors %d throughput %.1f req/s p50 %.2f ms p90 %.2f ms p99 %.2f ms\n",
      summary.requests, bad, summary.requests / seconds, latency:percentile(50) / 1000,
      latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
