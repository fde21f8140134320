--[[
  project: writes a task's status projection as folded from its history (src/audit/Projection.ts computes
  it with TaskDecider.evolve): the status hash, the steering list, the wait list, the results and children
  hashes, the status index, the delayed set and the deadline set.
  Used by `importHistories` (mode "import") and by `rebuild --fix` (mode "fix"). Not one of the task
  transition scripts: it appends no event and touches no queue.

  Invariant: the projection is written only from the history it was folded from. "fix" checks that the
  history still has the length the fold saw (histories are append-only, so an equal length means the
  same events); "import" refuses a task whose hash or history already exists, then writes the history.

  KEYS[1] task hash   KEYS[2] task history (list)   KEYS[3] steering list
  ARGV[1] partition prefix "{ns:p}"   ARGV[2] task id   ARGV[3] "import" | "fix"
  ARGV[4] history length the fold saw   ARGV[5] status   ARGV[6] time the task entered that status (ms)
  ARGV[7] retryAt ('' unless backoff)   ARGV[8] agent
  ARGV[9] n, then n field/value pairs of the hash
  then m, then m steering messages (JSON)
  then w, then w wait items (JSON); then r, then r result id/JSON pairs; then c, then c child id/JSON pairs
  then the deadline ('' none)
  then (import only) the history entries (envelope JSON), oldest first
  Returns { "ok" } | { "rejected", "exists" | "raced", history length }
]]
local H, LOG, STEERING = KEYS[1], KEYS[2], KEYS[3]
local PREFIX, TASK_ID, MODE = ARGV[1], ARGV[2], ARGV[3]
local expected, status, score, retry_at, agent = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local STATUSES = { 'queued', 'processing', 'backoff', 'waiting', 'completed', 'failed', 'cancelled', 'expired' }

local i = 9
local nfields = tonumber(ARGV[i])
local fields_from = i + 1
i = fields_from + 2 * nfields
local nsteer = tonumber(ARGV[i])
local steer_from = i + 1
i = steer_from + nsteer
local nwait = tonumber(ARGV[i])
local wait_from = i + 1
i = wait_from + nwait
local nresults = tonumber(ARGV[i])
local results_from = i + 1
i = results_from + 2 * nresults
local nchildren = tonumber(ARGV[i])
local children_from = i + 1
i = children_from + 2 * nchildren
local deadline = ARGV[i]
local entries_from = i + 1
local WAIT, RESULTS, CHILDREN = H .. ':wait', H .. ':results', H .. ':children'

if MODE == 'import' then
  if redis.call('EXISTS', H) == 1 or redis.call('EXISTS', LOG) == 1 then
    return { 'rejected', 'exists', redis.call('LLEN', LOG) }
  end
  for j = entries_from, #ARGV, 1000 do
    redis.call('RPUSH', LOG, unpack(ARGV, j, math.min(j + 999, #ARGV)))
  end
else
  local len = redis.call('LLEN', LOG)
  if len ~= expected then return { 'rejected', 'raced', len } end
end

-- The last heartbeat time is liveness, not history: a fix keeps the one the hash has.
local hb = redis.call('HGET', H, 'hb')
redis.call('DEL', H, STEERING, WAIT, RESULTS, CHILDREN)
for _, s in ipairs(STATUSES) do redis.call('ZREM', PREFIX .. ':idx:' .. s, TASK_ID) end
redis.call('ZREM', PREFIX .. ':delayed', TASK_ID)
redis.call('ZREM', PREFIX .. ':waits', TASK_ID)
if status == 'expired' then return { 'ok' } end

for j = fields_from, fields_from + 2 * nfields - 1, 2 do redis.call('HSET', H, ARGV[j], ARGV[j + 1]) end
if hb and MODE == 'fix' then redis.call('HSET', H, 'hb', hb) end
for j = steer_from, steer_from + nsteer - 1 do redis.call('RPUSH', STEERING, ARGV[j]) end
for j = wait_from, wait_from + nwait - 1 do redis.call('RPUSH', WAIT, ARGV[j]) end
for j = results_from, results_from + 2 * nresults - 1, 2 do redis.call('HSET', RESULTS, ARGV[j], ARGV[j + 1]) end
for j = children_from, children_from + 2 * nchildren - 1, 2 do redis.call('HSET', CHILDREN, ARGV[j], ARGV[j + 1]) end
-- The task scripts read side keys only of a task with this mark (streams/lua/lib.lua's mark_side).
if nsteer + nwait + nresults + nchildren > 0 then redis.call('HSET', H, 'sideKeys', '1') end
if deadline ~= '' then redis.call('ZADD', PREFIX .. ':waits', deadline, TASK_ID) end
-- With the index's anchor, as the task scripts add it (streams/Keys.ts INDEX_ANCHOR).
redis.call('ZADD', PREFIX .. ':idx:' .. status, '-inf', '@INDEX_ANCHOR@', score, TASK_ID)
if status == 'backoff' and retry_at ~= '' then redis.call('ZADD', PREFIX .. ':delayed', retry_at, TASK_ID) end
redis.call('SADD', PREFIX .. ':agents', agent)
return { 'ok' }
