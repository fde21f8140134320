--[[
  checkpoint: a non-final turn ended; its payload is saved and the task goes back to the queue for
  the next turn (TurnCompleted); the results of the wait it ran after are consumed. If a cancel was requested
  meanwhile, the task ends cancelled instead.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5] queue entry id   ARGV[6] payload (JSON)   ARGV[7] steering messages applied
  ARGV[8] "1" when ARGV[6] is a payload delta (lib.lua's checkpoint_at), else ""
  Returns { "ok", event tag } (a requested cancel: { "ok", "TaskCancelled", follow-up due }) | rejected TaskNotFound / StaleLease / InvalidSteeringCount
]]
local lease, entry_id, payload, applied, delta = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local t, rejection
if delta == '1' then t, rejection = require_lease(lease, 'turns', 'payloadAt') else t, rejection = require_lease(lease, 'turns') end
if t == nil then return rejection end
if t.cancel == '1' then return finish_cancelled(t, entry_id) end
local pending = load_side(t)
if not valid_applied(applied, pending) then return rejected('InvalidSteeringCount', t, pending) end

if applied > 0 then redis.call('LTRIM', STEERING, applied, -1) end
consume_wait(t)
t.turns = t.turns + 1
local turns = int(t.turns)
clear_worker(t)
set_status(t, 'queued')
local key, point = checkpoint_at(t, delta)
append(t, 'TurnCompleted', pieces('"lease":' .. int(t.lease) .. ',"turn":' .. turns .. ',' .. key, payload,
  ',"steeringApplied":' .. int(applied)), { point }, { 'turns', turns, 'entry', queue_entry(t) })
ack(t.agent, entry_id)
return { 'ok', 'TurnCompleted' }
