-- wrk script: every request is a POST of one JSON body of about 1 KiB (an
-- order with ten items, the shape the transform scenario's route edits).
-- Only wrk.* fields are set, so wrk keeps its fast request path. run.sh
-- appends wrk_report.lua (wrk takes one script).
local items = {}
for i = 1, 10 do
    items[i] = string.format('{"sku_id":"sku-%d","price":"12.50","qty":%d,"note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}', i, i % 7)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user_id":7,"total":"125.00","items":[' .. table.concat(items, ",") .. '],"internal":"secret"}'
