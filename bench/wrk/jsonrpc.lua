-- sluice-bench's JSON-RPC and REST loads for wrk (scenario jsonrpc).
-- bench/src/jsonrpc.rs builds the very same bodies (`body`); keep the two
-- in step.
--
-- Arguments (after `--`): <kind> <keys> <bytes> <delay_ms>
--   kind "jsonrpc": POST /mcp with the body
--     {"jsonrpc":"2.0","id":<i>,"method":"tools/call","params":{"name":"echo","arguments":{"text":"xx…"}}}
--   kind "rest": POST /api/v1/items with the body {"text":"xx…"}
--   Both padded through the text to exactly <bytes> bytes, with
--     content-type: application/json  x-forwarded-for: 10.a.b.c (k in base 256)  x-tenant-id: tenant-k
--   and request i goes to client k = i mod keys (ids 1..keys, cycling).
--   Each connection waits <delay_ms> before each request (0: no pause), so
--   that the rate stays near connections × 1000 / delay_ms per second.
--
-- done() prints one line, `sluice-bench {json}`, like mix.lua.

local kind, keys, bytes, pause = "jsonrpc", 1000, 512, 0
local n = 0
local cycle = {}

local function ip(k)
  return string.format("10.%d.%d.%d", math.floor(k / 65536) % 256, math.floor(k / 256) % 256, k % 256)
end

local function body(i)
  local head, tail
  if kind == "jsonrpc" then
    head = '{"jsonrpc":"2.0","id":' .. (i + 1) .. ',"method":"tools/call","params":{"name":"echo","arguments":{"text":"'
    tail = '"}}}'
  else
    head, tail = '{"text":"', '"}'
  end
  return head .. string.rep("x", math.max(0, bytes - #head - #tail)) .. tail
end

local function build(i)
  local path = "/api/v1/items"
  if kind == "jsonrpc" then path = "/mcp" end
  return wrk.format("POST", path, {
    ["content-type"] = "application/json",
    ["x-forwarded-for"] = ip(i),
    ["x-tenant-id"] = "tenant-" .. i,
  }, body(i))
end

function init(args)
  kind = args[1] or kind
  keys = tonumber(args[2]) or keys
  bytes = tonumber(args[3]) or bytes
  pause = tonumber(args[4]) or pause
  for i = 0, keys - 1 do
    cycle[i + 1] = build(i)
  end
end

function delay()
  return pause
end

function request()
  local r = cycle[n % keys + 1]
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
