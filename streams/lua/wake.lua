--[[
  wake: a task in backoff whose retry time has come goes back on its queue (TaskBackoffElapsed).
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  Returns { "ok", "TaskBackoffElapsed" } | rejected TaskNotFound / NotDue
]]
local t = load_task()
if t == nil then
  redis.call('ZREM', PREFIX .. ':delayed', TASK_ID)
  return rejected('TaskNotFound', nil)
end
if t.status ~= 'backoff' then
  redis.call('ZREM', PREFIX .. ':delayed', TASK_ID)
  return rejected('NotDue', t)
end
if tonumber(t.retryAt or '0') > tonumber(NOW) then return rejected('NotDue', t) end
redis.call('ZREM', PREFIX .. ':delayed', TASK_ID)
redis.call('HDEL', H, 'retryAt')
set_status(t, 'queued')
append(t, 'TaskBackoffElapsed', '')
requeue(t)
return { 'ok', 'TaskBackoffElapsed' }
