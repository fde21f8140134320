--[[
  heartbeat: a worker renews its lease: the hash's `hb` (the task's last sign of life) and the idle time of its
  queue entry, so maintenance does not take it back. No event: a heartbeat changes no state, and writing one to
  the partition log cost a fleet of long turns more memory than its tasks (ADR 0022).
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5] worker id   ARGV[6] queue entry id   ARGV[7] agent
  Returns { "ok", cancelRequested (0|1) } | rejected TaskNotFound / StaleLease
]]
local lease, worker, entry_id, agent = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local t, rejection = require_lease(lease)
if t == nil then return rejection end
redis.call('HSET', H, 'hb', NOW)
if entry_id ~= '' then
  redis.call('XCLAIM', queue_key(agent), agent, worker, 0, entry_id, 'JUSTID')
end
return { 'ok', t.cancel }
