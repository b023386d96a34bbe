-- wrk script: after wrk's own summary, print one machine-readable line
-- ("WRK_JSON {...}") with the totals, the error counters and the latency
-- percentiles in microseconds, including p99.9 which `--latency` omits.
-- Only done() is defined, so wrk keeps its fast (script-free) request path.
-- run.sh may put a scenario's script in front of this one in the same file;
-- if that script defined a done() of its own (e.g. wrk_mixed.lua's counts),
-- it is kept and called first instead of being silently replaced.
local scenario_done = done
done = function(summary, latency, requests)
    if scenario_done then scenario_done(summary, latency, requests) end
    local e = summary.errors
    local function p(q) return latency:percentile(q) end
    io.write(string.format(
        'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%.0f,"p75":%.0f,"p90":%.0f,"p99":%.0f,"p99.9":%.0f,"max":%.0f}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        p(50), p(75), p(90), p(99), p(99.9), latency.max))
end
