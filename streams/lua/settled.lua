--[[
  settled: the follow-up step (src/FollowUp.ts) did what the task's state at `version` called for (told its
  parent and batch of its end, cancelled its children); the task leaves the outbox unless it changed since
  (then the next sweep settles it again). Not a transition: no event.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] the version the step read ("" when the task had no hot data)
  Returns { "ok", 1 (removed) | 0 (changed since: kept) }
]]
local version = redis.call('HGET', H, 'version')
if version and version ~= ARGV[4] then return { 'ok', 0 } end
redis.call('ZREM', PREFIX .. ':outbox', TASK_ID)
return { 'ok', 1 }
