--[[
  complete: the final turn ended with an output (TaskCompleted). Steering that arrived during the
  final turn is reported in the event as unapplied. A requested cancel wins (TaskCancelled).
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5] queue entry id   ARGV[6] output (JSON)   ARGV[7] steering messages applied
  ARGV[8] the final turn's payload (JSON), or "" when the agent gave none
  ARGV[9] "1" when ARGV[8] is a payload delta (lib.lua's checkpoint_at), else ""
  Returns { "ok", event tag, follow-up due (1: the task went to the outbox) } | rejected TaskNotFound / StaleLease / InvalidSteeringCount
]]
local lease, entry_id, output, applied, payload, delta = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
local t, rejection
if delta == '1' then t, rejection = require_lease(lease, 'payloadAt') else t, rejection = require_lease(lease) end
if t == nil then return rejection end
if t.cancel == '1' then return finish_cancelled(t, entry_id) end
local pending = load_side(t)
if not valid_applied(applied, pending) then return rejected('InvalidSteeringCount', t, pending) end

finish(t)
local payload_key, points = '', { 'outputAt' }
if payload ~= nil and payload ~= '' then
  local key, point = checkpoint_at(t, delta)
  payload_key, points[2] = ',' .. key, point
end
clear_worker(t)
set_status(t, 'completed')
append(t, 'TaskCompleted', pieces('"lease":' .. int(t.lease) .. ',"output":', output, payload_key, payload, ',"steeringApplied":' ..
  int(applied) .. ',"steeringUnapplied":' .. (pending == applied and '0' or int(pending - applied))), points)
ack(t.agent, entry_id)
return { 'ok', 'TaskCompleted', follow_up_due(t) }
