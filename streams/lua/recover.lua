--[[
  recover: maintenance took back the queue entry of a worker that stopped heartbeating (XAUTOCLAIM).
  If the task still runs under that entry's lease, the lease is revoked (TaskRecovered): requeued with one
  more retry, or failed when retries are exhausted; a requested cancel ends it cancelled. Either way the
  old entry is acked. A stale entry (the task moved on) is only acked. An entry that was read but never
  claimed (its worker died between XREADGROUP and claim) is replaced by a fresh one: no event, no state change.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease the entry's claim started   ARGV[5] queue entry id   ARGV[6] agent
  Returns { "ok", decision } ({ "ok", "TaskCancelled", follow-up due } for a requested cancel) | rejected TaskNotFound / StaleLease
]]
local lease, entry_id, agent = ARGV[4], ARGV[5], ARGV[6]
local t, rejection = require_lease(lease, 'retries', 'maxRetries')
if t == nil then
  local current = load_task()
  if current ~= nil and current.status == 'queued' and current.lease == tonumber(lease) - 1 then
    requeue(current)
  end
  ack(agent, entry_id)
  return rejection
end
if t.cancel == '1' then return finish_cancelled(t, entry_id) end
clear_worker(t)
t.retries = tonumber(t.retries)
if t.retries >= tonumber(t.maxRetries) then
  finish(t)
  redis.call('HSET', H, 'error', '{"message":"worker lost its lease","kind":"recovered"}')
  set_status(t, 'failed')
  append(t, 'TaskRecovered', '"lease":' .. t.lease .. ',"decision":"failed","retries":' .. t.retries)
  ack(agent, entry_id)
  return { 'ok', 'failed' }
end
t.retries = t.retries + 1
redis.call('HSET', H, 'retries', t.retries)
set_status(t, 'queued')
append(t, 'TaskRecovered', '"lease":' .. t.lease .. ',"decision":"requeued","retries":' .. t.retries)
ack(agent, entry_id)
requeue(t)
return { 'ok', 'requeued' }
