-- sluice-bench's request mix for wrk. bench/src/mix.rs builds the very same
-- requests for the harness's load generator; keep the two in step.
--
-- Arguments (after `--`): <keys> <offset> <hot>
--   Client k (offset <= k < offset + keys) sends
--     GET /api/v1/items  x-forwarded-for: 10.a.b.c (k in base 256)  x-tenant-id: tenant-k
--   and request n goes to client offset + n mod keys. With hot = 1, every
--   even request instead comes from one hot client,
--     GET /api/v1/categories  x-forwarded-for: 192.0.2.10  x-tenant-id: tenant-k
--   and the odd ones cycle through the clients (k = offset + floor(n/2) mod keys).
-- Cycles of at most 200000 requests are formatted once in init(); longer
-- ones are formatted per request.
--
-- done() prints one line, `sluice-bench {json}`, with the exact counts and
-- latency percentiles (microseconds) that sluice-bench reads.

local keys, offset, hot = 1000, 0, 0
local n = 0
local cycle, cycle_len = nil, 0

local function ip(k)
  return string.format("10.%d.%d.%d", math.floor(k / 65536) % 256, math.floor(k / 256) % 256, k % 256)
end

local function build(i)
  local k
  if hot == 1 then
    k = offset + math.floor(i / 2) % keys
    if i % 2 == 0 then
      return wrk.format("GET", "/api/v1/categories",
        { ["x-forwarded-for"] = "192.0.2.10", ["x-tenant-id"] = "tenant-" .. k })
    end
  else
    k = offset + i % keys
  end
  return wrk.format("GET", "/api/v1/items",
    { ["x-forwarded-for"] = ip(k), ["x-tenant-id"] = "tenant-" .. k })
end

function init(args)
  keys = tonumber(args[1]) or keys
  offset = tonumber(args[2]) or offset
  hot = tonumber(args[3]) or hot
  local len = keys
  if hot == 1 then len = 2 * keys end
  if len <= 200000 then
    cycle, cycle_len = {}, len
    for i = 0, len - 1 do
      cycle[i + 1] = build(i)
    end
  end
end

function request()
  local r
  if cycle then
    r = cycle[n % cycle_len + 1]
  else
    r = build(n)
  end
  n = n + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'sluice-bench {"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
