--[[
  wait: a turn ended waiting for deferred results and child tasks (TaskWaiting). As checkpoint does, it saves the
  payload, counts the turn and consumes the results of the wait the turn ran after; then the task waits for the
  new items (deadline: the earliest timeout among them) — or is queued at once if all of them are in already
  (children that finished before their parent parked). A requested cancel wins.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5] queue entry id   ARGV[6] payload (JSON)   ARGV[7] steering messages applied
  ARGV[8] "1" when ARGV[6] is a payload delta (lib.lua's checkpoint_at), else ""
  ARGV[9] the items as one JSON array   ARGV[10..] each item (JSON {id, kind, token?, timeoutAt?, onTimeout?})
  Returns { "ok", "TaskWaiting", resumed (0|1) } | { "ok", "TaskCancelled", follow-up due (0|1) }
        | rejected TaskNotFound / StaleLease / InvalidSteeringCount / InvalidWait ("<reason>:<id>")
]]
local lease, entry_id, payload, applied, delta, pending_json = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
local t, rejection
if delta == '1' then t, rejection = require_lease(lease, 'turns', 'payloadAt') else t, rejection = require_lease(lease, 'turns') end
if t == nil then return rejection end
if t.cancel == '1' then return finish_cancelled(t, entry_id) end
side_keys()
local pending = redis.call('LLEN', STEERING)
if not valid_applied(applied, pending) then return rejected('InvalidSteeringCount', t, pending) end

-- Check every item before writing anything, against the results as they are once the previous wait's are consumed.
local previous = {}
for _, item in ipairs(wait_items()) do previous[item.id] = true end
local function has_result(id) return not previous[id] and redis.call('HEXISTS', RESULTS, id) == 1 end
if #ARGV < 10 then return rejected('InvalidWait', t, 0, 'empty:') end
local items, seen = {}, {}
for i = 10, #ARGV do
  local item = cjson.decode(ARGV[i])
  item.raw = ARGV[i]
  if seen[item.id] then return rejected('InvalidWait', t, 0, 'duplicate:' .. item.id) end
  seen[item.id] = true
  local child = redis.call('HGET', CHILDREN, item.id)
  if item.kind == 'child' then
    if not child or (cjson.decode(child)['end'] ~= nil and not has_result(item.id)) then
      return rejected('InvalidWait', t, 0, 'notAChild:' .. item.id)
    end
  elseif child then
    return rejected('InvalidWait', t, 0, 'isAChild:' .. item.id)
  end
  items[#items + 1] = item
end

mark_side(t)
if applied > 0 then redis.call('LTRIM', STEERING, applied, -1) end
consume_wait(t)
for _, item in ipairs(items) do redis.call('RPUSH', WAIT, item.raw) end
t.turns = t.turns + 1
clear_worker(t)
local open = outstanding(items)
local resumed = #open == 0
local deadline = set_deadline(open)
set_status(t, resumed and 'queued' or 'waiting')
local key, point = checkpoint_at(t, delta)
append(t, 'TaskWaiting', pieces('"lease":' .. t.lease .. ',"turn":' .. t.turns .. ',' .. key, payload,
  ',"steeringApplied":' .. applied .. ',"pending":' .. pending_json ..
  (deadline and (',"deadline":' .. deadline) or '') .. ',"resumed":' .. tostring(resumed)), { point }, { 'turns', t.turns },
  '"resumed":' .. tostring(resumed) .. ',')
ack(t.agent, entry_id)
if resumed then requeue(t) end
return { 'ok', 'TaskWaiting', resumed and 1 or 0 }
