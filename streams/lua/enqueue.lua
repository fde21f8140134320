--[[
  enqueue: creates a task and puts it on its agent's queue (TaskEnqueued).
  KEYS[1..3] task hash, history, partition log (see lib.lua)
  ARGV[1..3] prefix, task id, now
  ARGV[4] agent   ARGV[5] owner id   ARGV[6] payload (JSON)   ARGV[7] max retries
  ARGV[8] parent task id ("" none)   ARGV[9] batch id ("" none)
  Returns { "ok", version } | rejected TaskAlreadyExists (also for an expired task whose history is kept)
]]
local agent, owner, payload, max_retries, parent, batch = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if redis.call('EXISTS', H, LOG) > 0 then -- rare: load it for the rejection (an expired task loads from its history)
  local existing = load_task()
  if existing ~= nil then return rejected('TaskAlreadyExists', existing) end
end

-- The hash is created by append's HSET, with the event's version, time, status and payload index. Its key names
-- the task: the hash does not repeat the id (ADR 0026).
local fields = { 'agent', agent, 'ownerId', owner, 'lease', '0', 'retries', '0', 'maxRetries', max_retries,
  'turns', '0', 'cancel', '0', 'createdAt', NOW }
-- The event's fields in pieces, so that the payload is copied into its two entries only (lib.lua, `pieces`).
local tail = ',"maxRetries":' .. max_retries
if parent ~= '' then
  fields[#fields + 1] = 'parent'
  fields[#fields + 1] = parent
  tail = tail .. ',"parentId":' .. cjson.encode(parent)
end
if batch ~= '' then
  fields[#fields + 1] = 'batch'
  fields[#fields + 1] = batch
  tail = tail .. ',"batchId":' .. cjson.encode(batch)
end
local t = { agent = agent, ownerId = owner, version = 0, lease = 0, status = 'queued' }
fields[#fields + 1] = 'entry'
fields[#fields + 1] = queue_entry(t)
append(t, 'TaskEnqueued', pieces('"payload":', payload, tail), { 'payloadAt' }, fields)
index_add('queued')
redis.call('SADD', PREFIX .. ':agents', agent)
return { 'ok', t.version }
