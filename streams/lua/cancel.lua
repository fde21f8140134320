--[[
  cancel: a client cancels a task. Not yet running (queued, backoff, waiting): cancelled at once and it
  never runs (its stale queue entry is skipped by claim); its children are cancelled by the follow-up step. Running: the cancel is requested
  (TaskCancelRequested) and the running worker is told on the control channel; the task ends cancelled
  when that worker (or recovery) next acts. Cancelling a cancelled task changes nothing.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] control channel
  Returns { "ok", event tag or "" } | rejected TaskNotFound / TaskAlreadyFinished
]]
local channel = ARGV[4]
local t = load_task()
if t == nil then return rejected('TaskNotFound', nil) end
if t.status == 'cancelled' then return { 'ok', '' } end
if TERMINAL[t.status] then return rejected('TaskAlreadyFinished', t) end
if t.status == 'processing' then
  if t.cancel == '1' then return { 'ok', '' } end
  redis.call('HSET', H, 'cancel', 1)
  append(t, 'TaskCancelRequested', '')
  redis.call('PUBLISH', channel, '{"type":"cancel","taskId":' .. cjson.encode(TASK_ID) .. '}')
  return { 'ok', 'TaskCancelRequested' }
end
redis.call('ZREM', PREFIX .. ':delayed', TASK_ID)
finish(t)
clear_worker(t)
set_status(t, 'cancelled')
append(t, 'TaskCancelled', '')
return { 'ok', 'TaskCancelled' }
