-- wrk script: send each request with an X-Key header drawn from N keys, round
-- robin from a random start per thread:
--   wrk ... -s wrk_keys.lua URL -- N
-- The requests are formatted once in init(); request() hands wrk a prebuilt
-- string. cluster_limit.py appends wrk_report.lua (wrk takes one script).
local requests = {}
local count, next_index = 0, 0

function init(args)
    count = tonumber(args[1] or "")
    if not count or count < 1 then
        error("usage: wrk -s wrk_keys.lua URL -- N")
    end
    local headers = {}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    for i = 1, count do
        headers["X-Key"] = "key-" .. i
        requests[i] = wrk.format(nil, nil, headers)
    end
    next_index = math.random(count) - 1
end

function request()
    next_index = next_index % count + 1
    return requests[next_index]
end
