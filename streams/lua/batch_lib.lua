--[[
  batch_lib: helpers of every batch script (Scripts.ts puts this file before the batch scripts' functions,
  each of which starts with `begin_batch(KEYS, ARGV)`).

  Conventions shared by the batch scripts (a batch's keys are in the partition of its id, ADR 0008):
    KEYS[1] batch hash   KEYS[2] batch log (list of envelope JSON)
    KEYS[3] the batch's tasks (hash task id -> position)   KEYS[4] ended tasks (hash task id -> end)
    ARGV[1] batch id     ARGV[2] now (ms)
  Every script returns { "ok", ... } or { "rejected", reason, detail }.
  The rules mirror projections/BatchDecider.ts; test/streams/BatchStore.model.test.ts proves they agree.
]]
local B, BLOG, BTASKS, BENDED, BATCH_ID, NOW -- set by begin_batch at the start of every call

local function begin_batch(keys, argv)
  B, BLOG, BTASKS, BENDED = keys[1], keys[2], keys[3], keys[4]
  BATCH_ID, NOW = argv[1], argv[2]
end

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
