--[[
  timeout: maintenance found a waiting task past its deadline (TaskWaitTimedOut). The outstanding items whose
  timeout has come are timed out: if one of them says onTimeout "fail", the task fails (error kind
  "wait_timeout"); otherwise each gets a timeout result and the task is queued if nothing else is outstanding,
  or keeps waiting with its next deadline. Timed-out children are marked so, and the follow-up step cancels them.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  Returns { "ok", decision (failed|resumed|waiting) } | rejected TaskNotFound / NotDue
]]
local t = load_task()
if t == nil or t.status ~= 'waiting' then
  redis.call('ZREM', PREFIX .. ':waits', TASK_ID)
  if t == nil then return rejected('TaskNotFound', nil) end
  return rejected('NotDue', t)
end
local items = wait_items()
local due, ids, encoded, fail, children = {}, {}, {}, false, false
for _, item in ipairs(outstanding(items)) do
  if item.timeoutAt ~= nil and item.timeoutAt <= tonumber(NOW) then
    due[#due + 1] = item
    ids[#ids + 1] = item.id
    encoded[#encoded + 1] = cjson.encode(item.id)
    if (item.onTimeout or 'fail') == 'fail' then fail = true end
  end
end
if #due == 0 then return rejected('NotDue', t) end
mark_side(t)

for _, item in ipairs(due) do
  local child = item.kind == 'child' and redis.call('HGET', CHILDREN, item.id)
  if child then
    redis.call('HSET', CHILDREN, item.id, '{"agent":' .. cjson.encode(cjson.decode(child).agent) .. ',"end":"timedOut"}')
    children = true
  end
end
local decision
if fail then
  decision = 'failed'
  redis.call('HSET', H, 'error', '{"message":' .. cjson.encode('timed out waiting for ' .. table.concat(ids, ', ')) ..
    ',"kind":"wait_timeout"}')
  finish(t)
  set_status(t, 'failed')
else
  for _, item in ipairs(due) do
    redis.call('HSET', RESULTS, item.id, '{"kind":"' .. item.kind .. '","timedOut":true}')
  end
  local rest = outstanding(items)
  set_deadline(rest)
  if #rest == 0 then
    decision = 'resumed'
    set_status(t, 'queued')
  else
    decision = 'waiting'
  end
  if children then redis.call('ZADD', PREFIX .. ':outbox', NOW, TASK_ID) end
end
append(t, 'TaskWaitTimedOut', '"ids":[' .. table.concat(encoded, ',') .. '],"decision":"' .. decision .. '"')
if decision == 'resumed' then requeue(t) end
return { 'ok', decision }
