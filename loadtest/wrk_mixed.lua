-- wrk script: a deterministic mix of proxied requests and requests the
-- gateway must reject itself, with an exact count of requests sent and
-- responses received.
--   wrk ... -s wrk_mixed.lua URL -- OK_PATH ERROR_PATH PERIOD
-- Each thread cycles through PERIOD requests: PERIOD - 1 to OK_PATH, then one
-- to ERROR_PATH (PERIOD 5: 20 % errors). PERIOD 0 sends OK_PATH only, with
-- the same per-request Lua work, as a baseline for what the script itself
-- costs wrk. Defaults: the URL's path, /nope, 5. Other -H headers are kept.
--
-- Why count: a server that answers a kept-alive request more than once (or
-- never) is wrong in a way wrk's own summary hides, since wrk counts
-- responses only. request() counts what is sent, response() what comes back
-- (and the status codes), and done() prints the totals of all threads as one
-- line:
--   WRK_COUNTS {"requests":N,"error_path_requests":E,"responses":M,
--               "wrk_responses":W,"statuses":{"200":..,"404":..}}
-- With one request in flight per connection (wrk's default, no pipelining),
-- requests - responses must lie in [0, connections] when wrk stops: wrk cuts
-- off at most the one request each connection has in flight at the end.
-- run.sh (scenario "mixed") checks exactly that.
--
-- run.sh appends wrk_report.lua to this file (wrk takes one script); that
-- file's done() calls the done() defined here first.

-- Main (setup/done) state: the thread objects, since done() runs in the main
-- Lua state and can only read per-thread values through thread:get().
local threads = {}

function setup(thread)
    threads[#threads + 1] = thread
    -- Numbered in creation order; thread 1 gets wrk's probe call (see init).
    thread:set("thread_number", #threads)
end

-- Per-thread state. Globals, not locals, so that thread:get() can read them.
requests_sent = 0          -- request() calls that produced a request wrk sends
error_path_sent = 0        -- ... of them to ERROR_PATH
responses_received = 0     -- response() calls: complete responses parsed
statuses = {}              -- status code -> responses

local cycle = {}           -- the PERIOD formatted requests
local period, position = 0, 0
local error_every = true   -- false: PERIOD 0, no request goes to ERROR_PATH
local probe_pending = false

function init(args)
    local ok_path = args[1] or wrk.path
    local error_path = args[2] or "/nope"
    period = tonumber(args[3] or "5")
    if not period or period < 0 or period ~= math.floor(period) then
        error("usage: wrk -s wrk_mixed.lua URL -- OK_PATH ERROR_PATH PERIOD (PERIOD an integer >= 0)")
    end
    local ok_request = wrk.format(nil, ok_path)
    if period == 0 then
        period, error_every = 1, false   -- a cycle of one proxied request
        cycle[1] = ok_request
    else
        error_every = true
        for i = 1, period - 1 do cycle[i] = ok_request end
        cycle[period] = wrk.format(nil, error_path)
    end
    -- wrk (4.x, script_verify_request in script.c) calls request() once on
    -- the first thread's state, right after init() and before any connection
    -- exists, to count how many requests the string pipelines. That request
    -- is never sent, so it must not be counted.
    probe_pending = (thread_number == 1)
end

function request()
    if probe_pending then
        probe_pending = false
        return cycle[1]
    end
    position = position % period + 1
    requests_sent = requests_sent + 1
    if error_every and position == period then error_path_sent = error_path_sent + 1 end
    return cycle[position]
end

function response(status, headers, body)
    responses_received = responses_received + 1
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local sent, errors_sent, received, by_status = 0, 0, 0, {}
    for _, thread in ipairs(threads) do
        sent = sent + thread:get("requests_sent")
        errors_sent = errors_sent + thread:get("error_path_sent")
        received = received + thread:get("responses_received")
        for status, n in pairs(thread:get("statuses")) do
            by_status[status] = (by_status[status] or 0) + n
        end
    end
    local codes = {}
    for status in pairs(by_status) do codes[#codes + 1] = status end
    table.sort(codes)
    local parts = {}
    for i, status in ipairs(codes) do
        parts[i] = string.format('"%d":%d', status, by_status[status])
    end
    -- wrk_responses: wrk's own count of complete responses, which must equal
    -- ours (a cross-check that response() saw every one).
    io.write(string.format(
        'WRK_COUNTS {"requests":%d,"error_path_requests":%d,"responses":%d,' ..
        '"wrk_responses":%d,"threads":%d,"statuses":{%s}}\n',
        sent, errors_sent, received, summary.requests, #threads, table.concat(parts, ",")))
end
