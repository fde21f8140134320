--[[
  claim: a worker takes a task from a queue entry it read and starts a new lease (TaskClaimed); see
  lib.lua's claim_entry for stale entries and resent claims.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] the lease named by the queue entry   ARGV[5] worker id   ARGV[6] queue entry id
  ARGV[7] agent (queue and consumer group)
  Returns { "ok", owner id, lease, turns, retries, <history entry holding the payload>, [<steering messages>,
  <wait items>, <results as a flat list>, <children as a flat list>] (only for a task with side data) }
  (lib.lua's claim_view) | rejected TaskNotFound / StaleLease
]]
return claim_entry(tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7])
