--[[
  deliver: a deferred result arrives (ToolResultReceived), exactly once: the task's wait must name the id (as a
  result item), the token must be the item's when one is given, and the item must have no result yet. If it was
  the last one outstanding, the task is queued for its next turn, which gets the results.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] result id   ARGV[5] result (JSON)   ARGV[6] token ("": not checked)
  Returns { "ok", resumed (0|1) }
        | rejected TaskNotFound / TaskAlreadyFinished / ResultNotPending / InvalidResultToken / ResultAlreadyReceived
]]
local id, result, token = ARGV[4], ARGV[5], ARGV[6]
local t = load_task()
if t == nil then return rejected('TaskNotFound', nil) end
if TERMINAL[t.status] then return rejected('TaskAlreadyFinished', t) end
local items = wait_items()
local item
for _, it in ipairs(items) do
  if it.id == id and it.kind == 'result' then item = it end
end
if item == nil then return rejected('ResultNotPending', t, 0, id) end
if token ~= '' and item.token ~= token then return rejected('InvalidResultToken', t, 0, id) end
if redis.call('HEXISTS', RESULTS, id) == 1 then return rejected('ResultAlreadyReceived', t, 0, id) end

mark_side(t)
redis.call('HSET', RESULTS, id, '{"kind":"result","result":' .. result .. '}')
local open = outstanding(items)
local resumed = #open == 0
set_deadline(open)
if resumed then set_status(t, 'queued') end
append(t, 'ToolResultReceived', pieces('"id":' .. cjson.encode(id) .. ',"result":', result, ',"resumed":' .. tostring(resumed)), nil,
  nil, '"resumed":' .. tostring(resumed) .. ',')
if resumed then requeue(t) end
return { 'ok', resumed and 1 or 0 }
