-- wrk script for part 2: each request is a heartbeat from the next device of the fleet.
-- The fleet file has one "device_id token" per line; threads walk it from different offsets.
-- Arguments: the fleet file, then optionally a pace in ms: each connection then waits that long between
-- requests, so that wrk measures the server at the rate a simulated fleet makes, not at saturation.
-- Without a pace no `delay` function exists (wrk only takes its timer path when the script defines one).
local devices = {}
local counter = 0
local thread_offset = 0

function init(args)
  for line in io.lines(args[1]) do
    local id, token = line:match("^(%S+) (%S+)$")
    devices[#devices + 1] = { id = id, token = token }
  end
  thread_offset = math.random(#devices)
  local pace = tonumber(args[2])
  if pace then
    -- a global defined in init: wrk looks for `delay` after each thread's init has run
    function delay()
      return pace
    end
  end
end

function request()
  counter = counter + 1
  local d = devices[(counter + thread_offset) % #devices + 1]
  local body = '{"device_id":"' .. d.id .. '","status":"ok","battery_pct":' .. (counter % 100) ..
               ',"plugged":false,"network_type":"wifi","agent_version":"bench-1.0"}'
  return wrk.format("POST", "/v1/heartbeat",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. d.token }, body)
end

function done(summary, latency, requests)
  local s = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration, s.status, s.connect, s.read, s.write, s.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
