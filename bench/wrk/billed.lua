-- wrk script: one billed request = reserve (POST /api/v1/billing/entries) then its commit.
-- Run with as many threads as connections (-t N -c N): each thread has one connection, so its
-- request() and response() strictly alternate and a commit always follows its own reserve.
-- FINN_BENCH_KEYS names a file of API keys, one per line (one account each).
local keys = {}
local next_commit = nil     -- {id, key} of the entry this connection reserved last
local last_was_commit = false
local last_key = nil
commits, reserves, failures, statuses = 0, 0, 0, ""
local seen = {}

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("FINN_BENCH_KEYS")
  for line in io.lines(path) do
    if #line > 0 then table.insert(keys, line) end
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  if next_commit ~= nil then
    last_was_commit = true
    local entry = next_commit
    next_commit = nil
    return wrk.format("POST", "/api/v1/billing/entries/" .. entry.id .. "/commit",
      {["Authorization"] = "Bearer " .. entry.key, ["Content-Type"] = "application/json"},
      '{"actual_cost": 700}')
  end
  last_was_commit = false
  last_key = keys[math.random(#keys)]
  return wrk.format("POST", "/api/v1/billing/entries",
    {["Authorization"] = "Bearer " .. last_key, ["Content-Type"] = "application/json"},
    '{"estimated_cost": 1000}')
end

local function note(status)
  local label = (last_was_commit and "commit:" or "reserve:") .. status
  seen[label] = (seen[label] or 0) + 1
end

function response(status, headers, body)
  if last_was_commit then
    if status == 200 then commits = commits + 1 else failures = failures + 1; note(status) end
  else
    if status == 201 then
      reserves = reserves + 1
      local id = body:match('"id":%s*"([0-9A-Za-z]+)"')
      if id then next_commit = {id = id, key = last_key} else failures = failures + 1; note("noid") end
    else
      failures = failures + 1; note(status)
    end
  end
  local parts = {}
  for label, count in pairs(seen) do table.insert(parts, label .. "=" .. count) end
  statuses = table.concat(parts, ",")
end

function done(summary, latency, requests)
  local c, r, f = 0, 0, 0
  local kinds = {}
  for _, thread in ipairs(threads) do
    c = c + thread:get("commits"); r = r + thread:get("reserves"); f = f + thread:get("failures")
    local s = thread:get("statuses")
    if s and #s > 0 then table.insert(kinds, s) end
  end
  io.write(string.format(
    "FINN_RESULT commits=%d reserves=%d failures=%d requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d socket_errors=%d non2xx=%d kinds=%s\n",
    c, r, f, summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, table.concat(kinds, ";")))
end
