--[[
  metrics_apply: commits one folded batch of the metrics projection, all or nothing: adds the batch's
  bucket increments, writes the per-task memory and moves the checkpoint to the batch's last log id.
  (Not a task script: lib.lua is not included and the keys differ.)

  The batch was folded from the state at checkpoint ARGV[2]; if the checkpoint has moved since (the same
  batch was already committed, or another projector committed first), nothing is written and the caller
  reads again. So a redelivered batch is never counted twice.

  A batch the group delivered (not read from the log after the checkpoint) names its first log id, ARGV[8]:
  it is folded only if it is the log's next entry after the checkpoint; otherwise nothing is written and the
  reply says so ('gap': entries between went to another consumer, or were delivered before a crash), and the
  caller reads them from the log. Checking here saves the caller a round trip per batch.

  The set's bucket index (a sorted set: bucket id → the second its hash expires, `+inf` without a TTL) lists
  every bucket hash written here, and loses those that expired, so readers never SCAN for them. A set with no
  checkpoint yet has no bucket the index could miss: its first commit marks the index complete (ARGV[10]).
  The index expires with the last of its buckets.

  KEYS[1] partition checkpoints hash   KEYS[2] open-task memory hash   KEYS[3] partition event log
  KEYS[4] bucket index                 KEYS[5..] bucket hashes
  ARGV[1] checkpoint field             ARGV[2] expected checkpoint ("" when none yet)
  ARGV[3] new checkpoint ("" leaves it; a rebuild writes in several steps)
  ARGV[4] bucket TTL in seconds (0: none)
  ARGV[5] "add": increment | "replace": each listed bucket is emptied first | "replace+memory": the memory
          hash too (a rebuild into the live set)
  ARGV[6] increments, JSON: one array per bucket key, [field, "n", field, "n", ...] (integers as strings)
  ARGV[7] memory, JSON: [task id, "queuedAt,claimedAt" or "" to forget, ...]
  ARGV[8] the batch's first log id, to check it follows the checkpoint ("" when the caller read the batch
          from the log after the checkpoint itself)
  ARGV[9] the bucket hashes' name prefix (a bucket's id is the rest of its name)
  ARGV[10] the index member that marks it complete
  Returns { "ok" } | { "stale", current checkpoint } | { "gap", current checkpoint }
]]
local CHECKPOINTS, OPEN, EVENTS, INDEX = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local BUCKETS = 4 -- KEYS[BUCKETS + i]: the bucket of increments[i]
local field, expected, new_checkpoint = ARGV[1], ARGV[2], ARGV[3]
local ttl, mode = tonumber(ARGV[4]), ARGV[5]

local current = redis.call('HGET', CHECKPOINTS, field)
if not current then current = '' end
if current ~= expected then return { 'stale', current } end
if ARGV[8] ~= '' then
  local next = redis.call('XRANGE', EVENTS, expected == '' and '-' or '(' .. expected, '+', 'COUNT', 1)[1]
  if next == nil or next[1] ~= ARGV[8] then return { 'gap', current } end
end

local increments = cjson.decode(ARGV[6])
local memory = cjson.decode(ARGV[7])

if mode == 'replace' or mode == 'replace+memory' then
  for i = 1, #increments do redis.call('DEL', KEYS[BUCKETS + i]) end
end
if mode == 'replace+memory' then redis.call('DEL', OPEN) end
local now = tonumber(redis.call('TIME')[1])
local expires = ttl > 0 and now + ttl or '+inf'
local indexed, removed, id_from = {}, {}, #ARGV[9] + 1
if current == '' then indexed[1], indexed[2] = '+inf', ARGV[10] end
for i = 1, #increments do
  local key, pairs_ = KEYS[BUCKETS + i], increments[i]
  for j = 1, #pairs_, 2 do
    redis.call('HINCRBY', key, pairs_[j], pairs_[j + 1])
  end
  if #pairs_ > 0 then
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    indexed[#indexed + 1] = expires
    indexed[#indexed + 1] = string.sub(key, id_from)
  elseif mode ~= 'add' then
    removed[#removed + 1] = string.sub(key, id_from) -- emptied above
  end
end
if #indexed > 0 then
  redis.call('ZADD', INDEX, unpack(indexed))
  if ttl > 0 then
    redis.call('ZREMRANGEBYSCORE', INDEX, '-inf', '(' .. now) -- their hashes have expired
    redis.call('EXPIRE', INDEX, ttl)
  end
end
if #removed > 0 then redis.call('ZREM', INDEX, unpack(removed)) end

-- One HSET (with the anchor that keeps the hash a hashtable: streams/Keys.ts MEMORY_ANCHOR) and one HDEL per
-- UNPACK_MAX values: Lua unpacks at most ~8,000 values into one call, and a rebuild writes every open task's memory.
local UNPACK_MAX = 4000
local function in_chunks(command, list)
  for from = 1, #list, UNPACK_MAX do
    redis.call(command, OPEN, unpack(list, from, math.min(from + UNPACK_MAX - 1, #list)))
  end
end
local set, forget = { '@MEMORY_ANCHOR@', '' }, {}
for j = 1, #memory, 2 do
  if memory[j + 1] == '' then
    forget[#forget + 1] = memory[j]
  else
    set[#set + 1] = memory[j]
    set[#set + 1] = memory[j + 1]
  end
end
if #set > 2 then in_chunks('HSET', set) end
if #forget > 0 then in_chunks('HDEL', forget) end

if new_checkpoint ~= '' then redis.call('HSET', CHECKPOINTS, field, new_checkpoint) end
return { 'ok' }
