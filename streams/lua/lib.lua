--[[
  lib: helpers included at the top of every task script (Scripts.ts prepends this file).

  Conventions shared by every task script:
    KEYS[1] task hash      KEYS[2] task history (list)      KEYS[3] partition event log (stream)
    ARGV[1] partition prefix "{ns:p}" (other keys of the same slot are built from it)
    ARGV[2] task id        ARGV[3] now (ms since epoch, from the command)
  Every script returns { "ok", ... } or { "rejected", reason, status, lease, pending }.
  The rules mirror projections/TaskDecider.ts; the model-based test proves they agree.
]]
local H, LOG, EVENTS = KEYS[1], KEYS[2], KEYS[3]
local PREFIX, TASK_ID, NOW = ARGV[1], ARGV[2], ARGV[3]
local STEERING = H .. ':steering'

local TERMINAL = { completed = true, failed = true, cancelled = true, expired = true }

-- The task's hash as a table, or nil if there is no task. An expired task has no hash, but its history
-- ends with TaskExpired: it loads as { status = 'expired', lease = <its last lease> }.
local function load_task()
  local flat = redis.call('HGETALL', H)
  if #flat == 0 then
    local last = redis.call('LINDEX', LOG, -1)
    if not last then return nil end
    local event = cjson.decode(last).event
    if event._tag ~= 'TaskExpired' then return nil end
    return { status = 'expired', lease = tonumber(event.lease or 0) }
  end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  t.lease = tonumber(t.lease)
  t.version = tonumber(t.version)
  t.retries = tonumber(t.retries)
  t.maxRetries = tonumber(t.maxRetries)
  t.turns = tonumber(t.turns)
  return t
end

local function rejected(reason, t, pending)
  if t == nil then return { 'rejected', reason, '', '0', '0' } end
  return { 'rejected', reason, t.status, tostring(t.lease), tostring(pending or 0) }
end

-- Appends one event to the task's history and the partition log; returns the stream id.
local function append(t, tag, data)
  t.version = t.version + 1
  local body = '"version":' .. t.version .. ',"at":' .. NOW .. ',"taskId":' .. cjson.encode(TASK_ID) ..
    ',"agent":' .. cjson.encode(t.agent) .. ',"ownerId":' .. cjson.encode(t.ownerId) ..
    ',"event":{"_tag":"' .. tag .. '"' .. (data == '' and '' or (',' .. data)) .. '}}'
  local id = redis.call('XADD', EVENTS, '*', 'e', '{' .. body)
  redis.call('RPUSH', LOG, '{"id":"' .. id .. '",' .. body)
  redis.call('HSET', H, 'version', t.version, 'updatedAt', NOW)
  return id
end

-- Moves the task between status indexes and records the new status.
local function set_status(t, status)
  redis.call('ZREM', PREFIX .. ':idx:' .. t.status, TASK_ID)
  if status ~= 'expired' then
    redis.call('ZADD', PREFIX .. ':idx:' .. status, NOW, TASK_ID)
  end
  t.status = status
  redis.call('HSET', H, 'status', status)
end

local function queue_key(agent) return PREFIX .. ':queue:' .. agent end

-- Puts the task on its agent's queue; the entry names the lease its claim must find. The hash keeps the
-- entry's id ('entry'), so a claim repeated after a lost reply can tell the entry of the live lease.
local function requeue(t)
  local id = redis.call('XADD', queue_key(t.agent), '*', 't', TASK_ID, 'l', t.lease)
  redis.call('HSET', H, 'entry', id)
end

-- Finishes a delivery: acknowledged and removed, so the queue holds only live entries.
local function ack(agent, entry_id)
  if entry_id ~= '' then
    local q = queue_key(agent)
    redis.call('XACK', q, agent, entry_id)
    redis.call('XDEL', q, entry_id)
  end
end

local function clear_worker(t)
  redis.call('HDEL', H, 'worker', 'retryAt')
end

-- Returns the live task under `lease`, or nil and the rejection.
local function require_lease(lease)
  local t = load_task()
  if t == nil then return nil, rejected('TaskNotFound', nil) end
  if t.status ~= 'processing' or t.lease ~= tonumber(lease) then
    return nil, rejected('StaleLease', t)
  end
  return t, nil
end

-- Whether a turn's count of applied steering messages is a whole number in 0..pending (not NaN, not 0.5).
local function valid_applied(applied, pending)
  return applied ~= nil and applied % 1 == 0 and applied >= 0 and applied <= pending
end

-- Ends a processing task as cancelled (a cancel was requested while it ran).
local function finish_cancelled(t, entry_id)
  clear_worker(t)
  redis.call('DEL', STEERING)
  set_status(t, 'cancelled')
  append(t, 'TaskCancelled', '"lease":' .. t.lease)
  ack(t.agent, entry_id)
  return { 'ok', 'TaskCancelled' }
end
