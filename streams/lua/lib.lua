--[[
  lib: helpers of every task script (Scripts.ts puts this file at the top of the library, each script in a
  function after it that starts with `begin(KEYS, ARGV)`).

  Conventions shared by every task script:
    KEYS[1] task hash      KEYS[2] task history (list)      KEYS[3] partition event log (stream)
    ARGV[1] partition prefix "{ns:p}" (other keys of the same slot are built from it)
    ARGV[2] task id        ARGV[3] now (ms since epoch, from the command)
  Every script returns { "ok", ... } or { "rejected", reason, status, lease, pending, detail } (detail: the
  result id a result rejection is about; "<reason>:<id>" for InvalidWait).
  The rules mirror projections/TaskDecider.ts; the model-based test proves they agree.
]]
-- The call's task and partition, set by `begin` at the start of every call (Scripts.ts puts each script in a
-- function of a Redis Function library: this file runs once, when the library loads).
-- STEERING: its steering messages; WAIT: the current wait's items (list of item JSON); RESULTS: the results
-- received for it or early (hash id -> result JSON); CHILDREN: the children the task spawned (hash id ->
-- {"agent", "end"?}).
local H, LOG, EVENTS, PREFIX, TASK_ID, NOW
local STEERING, WAIT, RESULTS, CHILDREN

-- Names the task's side keys (STEERING, WAIT, RESULTS, CHILDREN). Only calls that touch them do: most do not
-- (a task without side data has no 'sideKeys' field), and each name costs a string concatenation.
-- `begin` and `use_task` unset them, so a name can never be another task's.
local function side_keys()
  if STEERING ~= nil then return end
  STEERING, WAIT, RESULTS, CHILDREN = H .. ':steering', H .. ':wait', H .. ':results', H .. ':children'
end

-- Points the helpers at another task of this partition, for a script that acts on the tasks it reads from
-- a queue (claimnext): a task's keys follow from its id and carry the partition's hash tag, so its slot.
local function use_task(id)
  TASK_ID = id
  H = PREFIX .. ':task:' .. id
  LOG = H .. ':log'
  STEERING, WAIT, RESULTS, CHILDREN = nil, nil, nil, nil
end

local function begin(keys, argv)
  H, LOG, EVENTS = keys[1], keys[2], keys[3]
  PREFIX, TASK_ID, NOW = argv[1], argv[2], argv[3]
  STEERING, WAIT, RESULTS, CHILDREN = nil, nil, nil, nil
end

local TERMINAL = { completed = true, failed = true, cancelled = true, expired = true }
-- Added with every task a status index gets, so the index stays a skiplist (streams/Keys.ts INDEX_ANCHOR).
local INDEX_ANCHOR = '@INDEX_ANCHOR@'

-- The task's hash as a table, or nil if there is no task. An expired task has no hash, but its history
-- ends with TaskExpired: it loads as { status = 'expired', lease = <its last lease> }. Lease and version are
-- numbers; the other counts (retries, maxRetries, turns) stay text, as most calls only copy them: the scripts
-- that compare them convert them (tonumber costs ~900 instructions, and Lua compares two strings as text).
local function load_task()
  local flat = redis.call('HGETALL', H)
  if #flat == 0 then
    local last = redis.call('LINDEX', LOG, -1)
    if not last then return nil end
    local event = cjson.decode(last).event
    if event._tag ~= 'TaskExpired' then return nil end
    return { status = 'expired', lease = tonumber(event.lease or 0) }
  end
  local t = { flat = flat }
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  -- t.side: how many side keys exist; 0 without the 'sideKeys' mark, else unknown (nil) until load_side.
  if t.sideKeys == nil then t.side = 0 end
  t.lease = tonumber(t.lease)
  t.version = tonumber(t.version)
  return t
end

local function rejected(reason, t, pending, detail)
  if t == nil then return { 'rejected', reason, '', '0', '0', '' } end
  return { 'rejected', reason, t.status, tostring(t.lease), tostring(pending or 0), detail or '' }
end

-- An integer as text. Lua turns a number into text with "%.14g" (on concatenation, and as a command
-- argument with "%.17g"), about 2,000 instructions a time; "%d" about 1,200. The small ones — versions,
-- leases, history indexes, steering counts, mostly under 256 — come from a table built by the first call
-- after the library loads (loading cannot reach `string`). 256 entries, not more: the Lua GC walks the table
-- on every cycle, and with 1,024 that cost as much as the formatting saved (`bench:hot-path --callgrind`:
-- 2–3 % fewer instructions per commit-and-claim with 64 or 256).
local SMALL_INTS
local function int(n)
  if SMALL_INTS == nil then
    SMALL_INTS = {}
    for i = 0, 255 do SMALL_INTS[i] = string.format('%d', i) end
  end
  return SMALL_INTS[n] or string.format('%d', n)
end

-- A string as a JSON string. cjson.encode costs a few µs a call; owner and worker ids rarely need escaping,
-- so only a string with a quote, a backslash or a control character goes through it. Task ids and agent names
-- never do (the TaskId and AgentName schemas allow letters, digits and '_.:-'): they are quoted as they are.
local function json_string(s)
  if string.find(s, '[%c"\\]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end

-- The envelope of an event of the current task up to its fields, as JSON without its opening brace, in three
-- parts: `stamp` (version and time), `who` (task, agent and owner, after a comma) and `open` (the event's tag and
-- a comma if `data` follows); `data` ('' for none) and '}}' close it. `version` is text. A partition-log entry
-- has all three; a history entry puts the log entry's id first and leaves `who` out past its first entry, which
-- names them for the whole history (ADR 0026).
local function envelope_parts(t, version, tag, data)
  return '"version":' .. version .. ',"at":' .. NOW,
    ',"taskId":"' .. TASK_ID .. '","agent":"' .. t.agent .. '","ownerId":' .. json_string(t.ownerId),
    ',"event":{"_tag":"' .. tag .. '"' .. (data == '' and '' or ',')
end

-- The fields of an event that carries a payload (or an output, messages, a result), in up to five pieces,
-- for `append`: one table reused by every call, which `append` reads before the next one; missing pieces
-- are ''. Redis' Lua hashes every byte of every string it makes (luaS_newlstr, about ten instructions a
-- byte), so each intermediate string holding a 10 KB payload cost ~100,000 instructions: given in pieces, a
-- payload is hashed as the script's argument and in each entry that holds it, never in between
-- (`bench:hot-path --payload-bytes=10000 --callgrind`: enqueue 918,535 → 644,066 instructions).
local PIECES = {}
local function pieces(a, b, c, d, e)
  PIECES[1], PIECES[2], PIECES[3], PIECES[4], PIECES[5] = a, b or '', c or '', d or '', e or ''
  return PIECES
end

-- The events whose partition-log entry leaves their fields out when their large pieces (the second and the
-- fourth: payload, output, messages, result) exceed LEAN_BYTES: the entry is the envelope's head, the fields
-- the metrics fold reads (`keep`: TaskWaiting's and ToolResultReceived's `resumed`) and `"lean":1`, and the
-- history, which has them all, is where readers of the log find them (version − 1 is the entry's index there;
-- streams/LogEntry.ts). A payload is then stored once and hashed twice (ADR 0017: 644,066 → 474,524).
local LEAN_TAGS = { TaskEnqueued = true, TurnCompleted = true, TaskCompleted = true, TaskSteered = true,
  TaskWaiting = true, ToolResultReceived = true }
local LEAN_BYTES = 1024

-- Appends one event to the task's history and the partition log; returns the hash fields it wrote (a flat
-- field/value list). `data` is the event's fields after its tag: a string ('' for none), or `pieces(...)`,
-- with `keep` the fields a lean log entry keeps (each followed by a comma; see LEAN_TAGS).
-- Each entry is made in one concatenation. The hash gets the new version, time and status (set_status only
-- moves the indexes: every transition ends in an append) in one HSET, with `extra` fields ({ field, value,
-- ... }). `points` names hash fields that are to point at this event (its index in the history): the hash
-- keeps 'payloadAt' / 'outputAt' instead of copies of the payload and output, which keeps it small enough for
-- Redis' compact (listpack) encoding; a point { field, prefix } sets the field to prefix .. index (a chain of
-- payload deltas, checkpoint_at). Histories are append-only (and expire whole), so an index stays valid.
local function append(t, tag, data, points, extra, keep)
  t.version = t.version + 1
  local version = int(t.version)
  local stamp, who, open = envelope_parts(t, version, tag, data)
  local first = t.version == 1 and who or ''
  local id, n
  if data ~= PIECES then
    id = redis.call('XADD', EVENTS, '*', 'e', '{' .. stamp .. who .. open .. data .. '}}')
    n = redis.call('RPUSH', LOG, '{"id":"' .. id .. '",' .. stamp .. first .. open .. data .. '}}')
  else
    local a, b, c, d, e = PIECES[1], PIECES[2], PIECES[3], PIECES[4], PIECES[5]
    if LEAN_TAGS[tag] and #b + #d > LEAN_BYTES then
      id = redis.call('XADD', EVENTS, '*', 'e', '{' .. stamp .. who .. open .. (keep or '') .. '"lean":1}}')
    else
      id = redis.call('XADD', EVENTS, '*', 'e', '{' .. stamp .. who .. open .. a .. b .. c .. d .. e .. '}}')
    end
    n = redis.call('RPUSH', LOG, '{"id":"' .. id .. '",' .. stamp .. first .. open .. a .. b .. c .. d .. e .. '}}')
  end
  local fields = { 'version', version, 'updatedAt', NOW, 'status', t.status }
  if points ~= nil then
    local at = int(n - 1)
    for _, field in ipairs(points) do
      if type(field) == 'table' then
        fields[#fields + 1] = field[1]
        fields[#fields + 1] = field[2] .. at
      else
        fields[#fields + 1] = field
        fields[#fields + 1] = at
      end
    end
  end
  for _, value in ipairs(extra or {}) do fields[#fields + 1] = value end
  redis.call('HSET', H, unpack(fields))
  return fields
end

-- Adds the current task to the index of `status`, entered now, with the index's anchor.
local function index_add(status)
  redis.call('ZADD', PREFIX .. ':idx:' .. status, '-inf', INDEX_ANCHOR, NOW, TASK_ID)
end

-- Moves the task between status indexes; the hash gets the new status with the append that follows.
local function set_status(t, status)
  redis.call('ZREM', PREFIX .. ':idx:' .. t.status, TASK_ID)
  if status ~= 'expired' then index_add(status) end
  t.status = status
end

local function queue_key(agent) return PREFIX .. ':queue:' .. agent end

-- Puts the task on its agent's queue; the entry names the lease its claim must find. The hash keeps the
-- entry's id ('entry'), so a claim repeated after a lost reply can tell the entry of the live lease
-- (`queue_entry` only adds the entry: the caller writes 'entry' with its append).
local function queue_entry(t)
  return redis.call('XADD', queue_key(t.agent), '*', 't', TASK_ID, 'l', int(t.lease))
end
local function requeue(t)
  redis.call('HSET', H, 'entry', queue_entry(t))
end

-- Finishes a delivery: acknowledged. The entry stays in the stream until maintenance trims the queue up to
-- its oldest pending or undelivered entry (XTRIM MINID): an XDEL per entry cost ~5 µs of Redis per turn.
local function ack(agent, entry_id)
  if entry_id ~= '' then redis.call('XACK', queue_key(agent), agent, entry_id) end
end

local function clear_worker(t)
  redis.call('HDEL', H, 'worker', 'retryAt')
end

-- Returns the live task under `lease`, or nil and the rejection.
-- Reads only the fields every lease holder's commit uses (HMGET: nine values, no field names, into a table the
-- constructor sizes at once), not the whole hash: about 25,000 fewer instructions per commit than load_task.
-- A script that needs more names them (`...`: 'turns', 'retries', 'maxRetries'): each field HMGET looks up
-- walks the hash's listpack, ~1,500 instructions.
local function require_lease(lease, ...)
  local v = redis.call('HMGET', H, 'status', 'lease', 'version', 'cancel', 'agent', 'ownerId', 'parent', 'batch',
    'sideKeys', ...)
  local t
  if v[1] then
    t = { status = v[1], lease = tonumber(v[2]), version = tonumber(v[3]), cancel = v[4], agent = v[5], ownerId = v[6],
      parent = v[7] or nil, batch = v[8] or nil, sideKeys = v[9] or nil }
    for i = 1, select('#', ...) do t[select(i, ...)] = v[9 + i] end
    -- A deadline needs wait items, which need the side-keys mark (mark_side comes first): most tasks skip
    -- looking it up, a walk of the whole hash when it is absent.
    if not v[9] then t.side = 0 else t.deadline = redis.call('HGET', H, 'deadline') or nil end
  else
    t = load_task() -- none, or expired (see load_task)
  end
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

-- The current wait's items, decoded; each keeps its JSON text as .raw.
local function wait_items()
  side_keys()
  local items = {}
  for i, raw in ipairs(redis.call('LRANGE', WAIT, 0, -1)) do
    local item = cjson.decode(raw)
    item.raw = raw
    items[i] = item
  end
  return items
end

-- The items without a result yet.
local function outstanding(items)
  side_keys()
  local open = {}
  for _, item in ipairs(items) do
    if redis.call('HEXISTS', RESULTS, item.id) == 0 then open[#open + 1] = item end
  end
  return open
end

-- Keeps the hash's deadline and the partition's deadline set at the earliest timeout among `open` (none: removed).
-- Returns the deadline as text, or nil.
local function set_deadline(open)
  local d
  for _, item in ipairs(open) do
    if item.timeoutAt ~= nil and (d == nil or item.timeoutAt < d) then d = item.timeoutAt end
  end
  if d == nil then
    redis.call('HDEL', H, 'deadline')
    redis.call('ZREM', PREFIX .. ':waits', TASK_ID)
    return nil
  end
  local text = string.format('%d', d)
  redis.call('HSET', H, 'deadline', text)
  redis.call('ZADD', PREFIX .. ':waits', text, TASK_ID)
  return text
end

-- Marks the task as one that may have side keys ('sideKeys' = 1, never removed while the hash lives): every
-- script that writes a side key calls this first. A task without the mark has none, so a commit or a claim
-- reads and deletes nothing of them (most tasks never have side data). Names the side keys.
local function mark_side(t)
  side_keys()
  t.side = nil
  if t.sideKeys == '1' then return end
  t.sideKeys = '1'
  redis.call('HSET', H, 'sideKeys', '1')
end

-- How many of the task's side keys (steering, wait, results, children) exist, kept as t.side (0 at once
-- for a task without the 'sideKeys' mark). Returns the number of pending steering messages.
local function load_side(t)
  if t.side == 0 then return 0 end
  side_keys()
  t.side = redis.call('EXISTS', STEERING, WAIT, RESULTS, CHILDREN)
  if t.side == 0 then return 0 end
  return redis.call('LLEN', STEERING)
end

-- A turn's commit consumes the results of the wait it ran after.
local function consume_wait(t)
  if t.side == 0 then return end
  side_keys()
  for _, item in ipairs(wait_items()) do redis.call('HDEL', RESULTS, item.id) end
  redis.call('DEL', WAIT)
end

-- A task that ends drops its pending steering, wait, results and deadline, and goes to the outbox when others
-- must hear of its end (its parent or batch) or follow it (its children): see src/FollowUp.ts. Sets
-- t.follow_up then, which the scripts that end a task for its worker report (`follow_up_due`), so the worker
-- runs the step at once only for the tasks that need one.
local function finish(t)
  if t.side ~= 0 then
    side_keys()
    redis.call('DEL', STEERING, WAIT, RESULTS)
  end
  if t.deadline ~= nil then -- set_deadline keeps the field and the deadline set together
    redis.call('HDEL', H, 'deadline')
    redis.call('ZREM', PREFIX .. ':waits', TASK_ID)
  end
  if t.parent ~= nil or t.batch ~= nil or (t.side ~= 0 and redis.call('EXISTS', CHILDREN) == 1) then
    redis.call('ZADD', PREFIX .. ':outbox', NOW, TASK_ID)
    t.follow_up = true
  end
end

-- 1 when the task just went to the outbox (finish), else 0: the last element of a reply that ends a task.
local function follow_up_due(t) return t.follow_up and 1 or 0 end

-- Ends a processing task as cancelled (a cancel was requested while it ran).
local function finish_cancelled(t, entry_id)
  clear_worker(t)
  finish(t)
  set_status(t, 'cancelled')
  append(t, 'TaskCancelled', '"lease":' .. t.lease)
  ack(t.agent, entry_id)
  return { 'ok', 'TaskCancelled', follow_up_due(t) }
end

-- Adds the task's side data to a view (`out`: claim_view, read.lua), if it has any: its steering messages, wait
-- items, results and children (flat lists).
local function side_view(t, out)
  if t.side == 0 then return out end
  side_keys()
  if redis.call('EXISTS', STEERING, WAIT, RESULTS, CHILDREN) == 0 then return out end
  local n = #out
  out[n + 1] = redis.call('LRANGE', STEERING, 0, -1)
  out[n + 2] = redis.call('LRANGE', WAIT, 0, -1)
  out[n + 3] = redis.call('HGETALL', RESULTS)
  out[n + 4] = redis.call('HGETALL', CHILDREN)
  return out
end

-- The task as a claim reads it: the fields claim_entry checks and writes (status, lease, version, agent, owner;
-- 'entry' only for a rejected claim, there) and those its worker runs the turn from (turns, retries, payload), by one HMGET into a table the
-- constructor sizes at once. Not parent and batch: absent in most hashes, each would walk all of it, and the
-- worker learns whether a follow-up is due from the commit that ends the task (follow_up_due). Not the whole hash: HGETALL, a table of all its fields and the JSON of
-- them (what read.lua replies) were about a tenth of a claim's instructions. No hash: load_task (none, or
-- expired).
local function load_for_claim()
  local v = redis.call('HMGET', H, 'status', 'lease', 'version', 'agent', 'ownerId', 'payloadAt', 'turns',
    'retries', 'sideKeys')
  if not v[1] then return load_task() end
  local t = { status = v[1], lease = tonumber(v[2]), version = tonumber(v[3]), agent = v[4], ownerId = v[5],
    payloadAt = v[6] or nil, turns = v[7], retries = v[8], sideKeys = v[9] or nil }
  if not v[9] then t.side = 0 end
  return t
end

-- A checkpoint's payload argument is the payload's JSON, or (`delta` '1') what changed since the task's current
-- payload (ADR 0018). Returns the event's key for it and `append`'s point for the hash's 'payloadAt': the
-- entry itself, or for a delta "<from>-<entry>", the entries from the whole payload its chain starts at to
-- this one. A delta needs t.payloadAt loaded.
local function checkpoint_at(t, delta)
  if delta ~= '1' then return '"payload":', 'payloadAt' end
  local p = t.payloadAt
  local dash = string.find(p, '-', 1, true)
  return '"payloadDelta":', { 'payloadAt', (dash and string.sub(p, 1, dash) or (p .. '-')) }
end

-- The history entry holding the task's payload, or the entries of its chain (payloadAt "<from>-<to>") as a
-- list, which the reader folds (streams/TaskStore.ts `payloadOf`); false when the task has none.
local function payload_entries(t)
  local p = t.payloadAt
  if not p then return false end
  local dash = string.find(p, '-', 1, true)
  if not dash then return redis.call('LINDEX', LOG, p) end
  return redis.call('LRANGE', LOG, string.sub(p, 1, dash - 1), string.sub(p, dash + 1))
end

-- What the worker of a claimed task runs its turn from (claim's reply): "ok", owner, lease, turns, retries,
-- the history entry holding the payload (or its chain), then its side data (side_view). Flat: each table in a
-- function's reply costs Redis a dozen lookups.
local function claim_view(t)
  return side_view(t, { 'ok', t.ownerId, int(t.lease), t.turns, t.retries, payload_entries(t) })
end

-- Appends the elements of `list` to `out`.
local function append_all(out, list)
  local n = #out
  for i = 1, #list do out[n + i] = list[i] end
end

-- Claims the task (the current one) from a queue entry: starts a new lease (TaskClaimed). A stale entry (task
-- gone, not queued, or queued again under a newer lease) is acked and skipped. A claim of the entry that
-- started the live lease is the same claim run again (the client resent it after a lost reply): it is
-- rejected too, but the entry stays pending, so the lease its worker never learnt about is recovered by
-- maintenance after the heartbeat timeout instead of being lost.
-- Returns claim's reply (a `claim_view` of the claimed task) or a rejection.
local function claim_entry(entry_lease, worker, entry_id, agent)
  local t = load_for_claim()
  if t == nil then
    ack(agent, entry_id)
    return rejected('TaskNotFound', nil)
  end
  if t.status ~= 'queued' or t.lease ~= entry_lease then
    -- 'entry' is read only here: it is the hash's last field, which HMGET would walk the whole listpack for.
    if not (t.status == 'processing' and redis.call('HGET', H, 'entry') == entry_id) then ack(agent, entry_id) end
    return rejected('StaleLease', t)
  end
  t.lease = t.lease + 1
  local lease = int(t.lease)
  set_status(t, 'processing')
  append(t, 'TaskClaimed', '"lease":' .. lease .. ',"worker":' .. json_string(worker), nil,
    { 'lease', lease, 'worker', worker, 'hb', NOW })
  return claim_view(t)
end
