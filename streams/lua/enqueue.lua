--[[
  enqueue: creates a task and puts it on its agent's queue (TaskEnqueued).
  KEYS[1..3] task hash, history, partition log (see lib.lua)
  ARGV[1..3] prefix, task id, now
  ARGV[4] agent   ARGV[5] owner id   ARGV[6] payload (JSON)   ARGV[7] max retries
  Returns { "ok", version } | rejected TaskAlreadyExists (also for an expired task whose history is kept)
]]
local agent, owner, payload, max_retries = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local existing = load_task()
if existing ~= nil then return rejected('TaskAlreadyExists', existing) end

redis.call('HSET', H, 'id', TASK_ID, 'agent', agent, 'ownerId', owner, 'status', 'queued', 'payload', payload,
  'lease', 0, 'retries', 0, 'maxRetries', max_retries, 'turns', 0, 'cancel', 0, 'createdAt', NOW, 'version', 0)
local t = { agent = agent, ownerId = owner, version = 0, lease = 0, status = 'queued' }
append(t, 'TaskEnqueued', '"payload":' .. payload .. ',"maxRetries":' .. max_retries)
redis.call('ZADD', PREFIX .. ':idx:queued', NOW, TASK_ID)
redis.call('SADD', PREFIX .. ':agents', agent)
requeue(t)
return { 'ok', t.version }
