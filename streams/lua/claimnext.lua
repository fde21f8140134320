--[[
  claimnext: a worker with a free turn slot reads up to `count` new entries of its agent's queue in this
  partition and claims each (TaskClaimed), in one atomic step: no entry is read but left unclaimed, and a
  worker that has just committed a turn gets its next task in the same round trip (it pipelines this
  script right after the commit). Each entry is claimed exactly as `claim` would (lib.lua's claim_entry):
  stale entries are acked and skipped.
  KEYS[1] the agent's queue   KEYS[2] the agent's queue (again)   KEYS[3] partition log
  (the tasks' keys follow from the ids read: same partition, so the same hash slot)
  ARGV[1..3] prefix, "" (no task yet), now
  ARGV[4] worker id   ARGV[5] agent (queue and consumer group)   ARGV[6] how many entries to read at most
  (read as the last three arguments: Scripts.ts also runs this file after a commit script, in one call,
  with the commit's arguments first)
  Returns { "ok", entry id, task id, entry lease, n, <claim's reply: n elements>, entry id, … } for each
  entry read (flat: see lib.lua's claim_view)
]]
local worker, agent, count = ARGV[#ARGV - 2], ARGV[#ARGV - 1], tonumber(ARGV[#ARGV])
local out = { 'ok' }
local reply = redis.call('XREADGROUP', 'GROUP', agent, worker, 'COUNT', count, 'STREAMS', queue_key(agent), '>')
if not reply then return out end
for _, entry in ipairs(reply[1][2]) do
  local entry_id, fields = entry[1], entry[2]
  local id, entry_lease = '', 0
  for i = 1, #fields, 2 do
    if fields[i] == 't' then id = fields[i + 1] elseif fields[i] == 'l' then entry_lease = tonumber(fields[i + 1]) end
  end
  use_task(id)
  local claimed = claim_entry(entry_lease, worker, entry_id, agent)
  local n = #out
  out[n + 1] = entry_id
  out[n + 2] = id
  out[n + 3] = entry_lease
  out[n + 4] = #claimed
  append_all(out, claimed)
end
return out
