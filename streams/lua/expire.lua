--[[
  expire: a finished task's hot data is deleted after its TTL (TaskExpired, with the last lease). The history
  stays, under its own retention: kept forever, or given a TTL here. While it stays, the task answers as
  expired (see load_task): it cannot be enqueued again, and its history is never appended to.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] history retention in seconds (0: keep)
  Returns { "ok", "TaskExpired" } | rejected TaskNotFound / NotDue
]]
local history_ttl = tonumber(ARGV[4])
local t = load_task()
if t == nil then return rejected('TaskNotFound', nil) end
if not TERMINAL[t.status] or t.status == 'expired' then return rejected('NotDue', t) end
set_status(t, 'expired')
append(t, 'TaskExpired', '"lease":' .. t.lease)
side_keys()
redis.call('DEL', H, STEERING, WAIT, RESULTS, CHILDREN)
if history_ttl > 0 then redis.call('EXPIRE', LOG, history_ttl) end
return { 'ok', 'TaskExpired' }
