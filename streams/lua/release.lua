--[[
  release: a worker gives a task back, untouched, while its lease is valid: a graceful shutdown hands
  in-flight work back (TaskReleased, queued again, no retry counted), or a worker confirms a requested
  cancel (TaskCancelled) once it has interrupted the turn.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5] queue entry id   ARGV[6] "release" | "cancel"
  Returns { "ok", event tag } (a requested cancel: { "ok", "TaskCancelled", follow-up due }) | rejected TaskNotFound / StaleLease / NotDue (cancel not requested)
]]
local lease, entry_id, mode = ARGV[4], ARGV[5], ARGV[6]
local t, rejection = require_lease(lease)
if t == nil then return rejection end
if t.cancel == '1' then return finish_cancelled(t, entry_id) end
if mode == 'cancel' then return rejected('NotDue', t) end

clear_worker(t)
set_status(t, 'queued')
append(t, 'TaskReleased', '"lease":' .. t.lease)
ack(t.agent, entry_id)
requeue(t)
return { 'ok', 'TaskReleased' }
