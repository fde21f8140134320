--[[
  child_finished: a child task's end reaches its parent (ChildTaskFinished), exactly once per child, whatever the
  parent's live status: a child that finishes before its parent parked leaves its result for the wait that names
  it. If the parent waits and this was the last item outstanding, the parent is queued for its next turn.
  Sent by the follow-up step (src/FollowUp.ts) after the child's terminal commit, from the child's partition.
  KEYS[1..3] parent task hash, history, partition log
  ARGV[1..3] prefix, parent task id, now
  ARGV[4] child id   ARGV[5] child's end (completed|failed|cancelled|expired)   ARGV[6] output (JSON) or ""
  ARGV[7] error (JSON {message, kind}) or ""
  Returns { "ok", resumed (0|1) } | rejected TaskNotFound / TaskAlreadyFinished / ResultNotPending / ResultAlreadyReceived
]]
local id, status, output, err = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local t = load_task()
if t == nil then return rejected('TaskNotFound', nil) end
if TERMINAL[t.status] then return rejected('TaskAlreadyFinished', t) end
side_keys()
local child = redis.call('HGET', CHILDREN, id)
if not child then return rejected('ResultNotPending', t, 0, id) end
local ref = cjson.decode(child)
if ref['end'] ~= nil then return rejected('ResultAlreadyReceived', t, 0, id) end

local agent = cjson.encode(ref.agent)
mark_side(t)
redis.call('HSET', CHILDREN, id, '{"agent":' .. agent .. ',"end":"' .. status .. '"}')
local fields = '"agent":' .. agent .. ',"status":"' .. status .. '"' ..
  (output ~= '' and (',"output":' .. output) or '') .. (err ~= '' and (',"error":' .. err) or '')
redis.call('HSET', RESULTS, id, '{"kind":"child",' .. fields .. '}')
local resumed = false
if t.status == 'waiting' then
  local open = outstanding(wait_items())
  resumed = #open == 0
  set_deadline(open)
  if resumed then set_status(t, 'queued') end
end
append(t, 'ChildTaskFinished', '"childId":' .. cjson.encode(id) .. ',' .. fields .. ',"resumed":' .. tostring(resumed))
if resumed then requeue(t) end
return { 'ok', resumed and 1 or 0 }
