--[[
  fail: an attempt failed (TaskFailed). Fatal errors and exhausted retries end the task; otherwise the
  task is retried now (back on the queue) or after a backoff (delayed set). A requested cancel wins.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5] queue entry id   ARGV[6] error (JSON {message, kind})
  ARGV[7] "fatal" | "retry" | "backoff"   ARGV[8] retry time (ms, for backoff)
  Returns { "ok", decision, follow-up due (1: the task failed and went to the outbox) } | rejected TaskNotFound / StaleLease
]]
local lease, entry_id, err, retry, retry_at = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local t, rejection = require_lease(lease, 'retries', 'maxRetries')
if t == nil then return rejection end
if t.cancel == '1' then return finish_cancelled(t, entry_id) end

local decision = retry
t.retries = tonumber(t.retries)
if retry == 'fatal' or t.retries >= tonumber(t.maxRetries) then decision = 'failed' end
if decision ~= 'failed' then t.retries = t.retries + 1 end
redis.call('HSET', H, 'error', err, 'retries', t.retries)
clear_worker(t)
local data = '"lease":' .. t.lease .. ',"error":' .. err .. ',"decision":"' .. decision .. '","retries":' .. t.retries
if decision == 'failed' then
  finish(t)
  set_status(t, 'failed')
elseif decision == 'retry' then
  set_status(t, 'queued')
  requeue(t)
else
  data = data .. ',"retryAt":' .. retry_at
  redis.call('HSET', H, 'retryAt', retry_at)
  redis.call('ZADD', PREFIX .. ':delayed', retry_at, TASK_ID)
  set_status(t, 'backoff')
end
append(t, 'TaskFailed', data)
ack(t.agent, entry_id)
return { 'ok', decision, follow_up_due(t) }
