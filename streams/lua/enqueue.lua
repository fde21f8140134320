--[[
  enqueue: creates a task and puts it on its agent's queue (TaskEnqueued).
  KEYS[1..3] task hash, history, partition log (see lib.lua)
  ARGV[1..3] prefix, task id, now
  ARGV[4] agent   ARGV[5] owner id   ARGV[6] payload (JSON)   ARGV[7] max retries
  ARGV[8] parent task id ("" none)   ARGV[9] batch id ("" none)
  Returns { "ok", version } | rejected TaskAlreadyExists (also for an expired task whose history is kept)
]]
local agent, owner, payload, max_retries, parent, batch = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local existing = load_task()
if existing ~= nil then return rejected('TaskAlreadyExists', existing) end

redis.call('HSET', H, 'id', TASK_ID, 'agent', agent, 'ownerId', owner, 'status', 'queued',
  'lease', 0, 'retries', 0, 'maxRetries', max_retries, 'turns', 0, 'cancel', 0, 'createdAt', NOW, 'version', 0)
local data = '"payload":' .. payload .. ',"maxRetries":' .. max_retries
if parent ~= '' then
  redis.call('HSET', H, 'parent', parent)
  data = data .. ',"parentId":' .. cjson.encode(parent)
end
if batch ~= '' then
  redis.call('HSET', H, 'batch', batch)
  data = data .. ',"batchId":' .. cjson.encode(batch)
end
local t = { agent = agent, ownerId = owner, version = 0, lease = 0, status = 'queued' }
append(t, 'TaskEnqueued', data, { 'payloadAt' })
redis.call('ZADD', PREFIX .. ':idx:queued', NOW, TASK_ID)
redis.call('SADD', PREFIX .. ':agents', agent)
requeue(t)
return { 'ok', t.version }
