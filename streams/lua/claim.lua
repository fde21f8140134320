--[[
  claim: a worker takes a task from a queue entry and starts a new lease (TaskClaimed).
  A stale entry (task gone, not queued, or queued again under a newer lease) is acked and skipped.
  A claim of the entry that started the live lease is the same claim run again (the client resent it
  after a lost reply): it is rejected too, but the entry stays pending, so the lease its worker never
  learnt about is recovered by maintenance after the heartbeat timeout instead of being lost.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] the lease named by the queue entry   ARGV[5] worker id   ARGV[6] queue entry id
  ARGV[7] agent (queue and consumer group)
  Returns { "ok", <task hash as a flat list>, <steering messages>, <wait items>, <results as a flat list>,
  <children as a flat list> } | rejected TaskNotFound / StaleLease
]]
local entry_lease, worker, entry_id, agent = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local t = load_task()
if t == nil then
  ack(agent, entry_id)
  return rejected('TaskNotFound', nil)
end
if t.status ~= 'queued' or t.lease ~= entry_lease then
  if not (t.status == 'processing' and t.entry == entry_id) then ack(agent, entry_id) end
  return rejected('StaleLease', t)
end
t.lease = t.lease + 1
redis.call('HSET', H, 'lease', t.lease, 'worker', worker, 'hb', NOW)
set_status(t, 'processing')
append(t, 'TaskClaimed', '"lease":' .. t.lease .. ',"worker":' .. cjson.encode(worker))
return { 'ok', redis.call('HGETALL', H), redis.call('LRANGE', STEERING, 0, -1), redis.call('LRANGE', WAIT, 0, -1),
  redis.call('HGETALL', RESULTS), redis.call('HGETALL', CHILDREN) }
