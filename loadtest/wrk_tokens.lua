-- wrk script: send every request with the next bearer token from a file,
-- round robin (one token a line):
--   wrk ... -s wrk_tokens.lua URL -- TOKENS_FILE
-- All requests are formatted once in init(), so request() only hands wrk a
-- prebuilt string. Other -H headers are kept; an Authorization given with -H
-- is replaced. Each wrk thread cycles through the whole file on its own.
-- run.sh appends wrk_report.lua to this file (wrk takes one script).
local requests = {}
local count, next_index = 0, 0

function init(args)
    local file = args[1]
    if not file then
        error("usage: wrk -s wrk_tokens.lua URL -- TOKENS_FILE")
    end
    local headers = {}
    for name, value in pairs(wrk.headers) do
        if name:lower() ~= "authorization" then headers[name] = value end
    end
    for line in io.lines(file) do
        local token = line:match("^%s*(.-)%s*$")
        if token ~= "" then
            headers["Authorization"] = "Bearer " .. token
            count = count + 1
            requests[count] = wrk.format(nil, nil, headers)
        end
    end
    if count == 0 then error(file .. ": no tokens") end
end

function request()
    next_index = next_index % count + 1
    return requests[next_index]
end
