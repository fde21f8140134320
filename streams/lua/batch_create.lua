--[[
  batch_create: creates a batch with its task ids (BatchCreated), before its tasks are enqueued.
  KEYS[1..4] batch hash, log, tasks, ended (see batch_lib.lua)
  ARGV[1..2] batch id, now
  ARGV[3] agent   ARGV[4] owner id   ARGV[5] the task ids as one JSON array
  ARGV[6..] each task id followed by its position in the batch ("0", "1", ...)
  Returns { "ok" } | { "rejected", "BatchAlreadyExists", "" }
]]
local agent, owner, ids_json = ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', B) == 1 then return { 'rejected', 'BatchAlreadyExists', '' } end
-- The ids with their positions, 1,000 to an HSET, straight from the arguments. One call per id, with the
-- position as a Lua number that Redis formats with snprintf, cost 122 million instructions for 10,000 ids
-- (now 80 million), and Redis serves no other client meanwhile (`npm run bench:stall`).
for first = 6, #ARGV, 2000 do
  redis.call('HSET', BTASKS, unpack(ARGV, first, math.min(first + 1999, #ARGV)))
end
redis.call('HSET', B, 'id', BATCH_ID, 'agent', agent, 'ownerId', owner, 'status', 'active', 'total', (#ARGV - 5) / 2,
  'completed', 0, 'failed', 0, 'cancelled', 0, 'expired', 0, 'createdAt', NOW, 'version', 0)
local b = { ownerId = owner, version = 0 }
append_batch(b, 'BatchCreated', '"agent":' .. cjson.encode(agent) .. ',"taskIds":' .. ids_json)
return { 'ok' }
