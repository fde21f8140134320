--[[
  batch_lib: helpers included at the top of every batch script (Scripts.ts prepends this file).

  Conventions shared by the batch scripts (a batch's keys are in the partition of its id, ADR 0008):
    KEYS[1] batch hash   KEYS[2] batch log (list of envelope JSON)
    KEYS[3] the batch's tasks (hash task id -> position)   KEYS[4] ended tasks (hash task id -> end)
    ARGV[1] batch id     ARGV[2] now (ms)
  Every script returns { "ok", ... } or { "rejected", reason, detail }.
  The rules mirror projections/BatchDecider.ts; test/streams/BatchStore.model.test.ts proves they agree.
]]
local B, BLOG, BTASKS, BENDED = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local BATCH_ID, NOW = ARGV[1], ARGV[2]

-- The batch hash as a table, or nil.
local function load_batch()
  local flat = redis.call('HGETALL', B)
  if #flat == 0 then return nil end
  local b = {}
  for i = 1, #flat, 2 do b[flat[i]] = flat[i + 1] end
  b.version = tonumber(b.version)
  b.total = tonumber(b.total)
  return b
end

-- Appends one event to the batch's log.
local function append_batch(b, tag, data)
  b.version = b.version + 1
  redis.call('RPUSH', BLOG, '{"version":' .. b.version .. ',"at":' .. NOW .. ',"batchId":' .. cjson.encode(BATCH_ID) ..
    ',"ownerId":' .. cjson.encode(b.ownerId) .. ',"event":{"_tag":"' .. tag .. '"' .. (data == '' and '' or (',' .. data)) .. '}}')
  redis.call('HSET', B, 'version', b.version, 'updatedAt', NOW)
end
