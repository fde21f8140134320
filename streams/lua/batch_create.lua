--[[
  batch_create: creates a batch with its task ids (BatchCreated), before its tasks are enqueued.
  KEYS[1..4] batch hash, log, tasks, ended (see batch_lib.lua)
  ARGV[1..2] batch id, now
  ARGV[3] agent   ARGV[4] owner id   ARGV[5] the task ids as one JSON array   ARGV[6..] each task id
  Returns { "ok" } | { "rejected", "BatchAlreadyExists", "" }
]]
local agent, owner, ids_json = ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', B) == 1 then return { 'rejected', 'BatchAlreadyExists', '' } end
for i = 6, #ARGV do redis.call('HSET', BTASKS, ARGV[i], i - 6) end
redis.call('HSET', B, 'id', BATCH_ID, 'agent', agent, 'ownerId', owner, 'status', 'active', 'total', #ARGV - 5,
  'completed', 0, 'failed', 0, 'cancelled', 0, 'expired', 0, 'createdAt', NOW, 'version', 0)
local b = { ownerId = owner, version = 0 }
append_batch(b, 'BatchCreated', '"agent":' .. cjson.encode(agent) .. ',"taskIds":' .. ids_json)
return { 'ok' }
