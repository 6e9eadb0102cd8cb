-- wrk script: POST a chat completion on every request and count non-2xx answers by status.
--   wrk -t2 -c32 -d15s -s examples/load/wrk_chat.lua http://127.0.0.1:8000/v1/chat/completions
-- Set MODEL, MAX_TOKENS or STREAM=1 in the environment to change the request.

local model = os.getenv("MODEL") or "llmsim/sim-model"
local max_tokens = tonumber(os.getenv("MAX_TOKENS") or "32")
local stream = os.getenv("STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
  '{"model": "%s", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": %d, "stream": %s}',
  model, max_tokens, tostring(stream)
)

statuses = {}  -- global, so that done() can read it from each thread
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
