--[[
  spawn: a turn registers the child tasks it is about to enqueue (ChildTasksSpawned), so that a child's end is
  expected by its parent from before the child exists. Children already registered (a retried turn spawns the
  same ids again) are skipped; if none is new, nothing is written.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] lease   ARGV[5..] child id, child agent, child id, child agent, …
  Returns { "ok", number of new children } | rejected TaskNotFound / StaleLease
]]
local t, rejection = require_lease(ARGV[4])
if t == nil then return rejection end
mark_side(t)
local fresh = {}
for i = 5, #ARGV - 1, 2 do
  local id, agent = ARGV[i], ARGV[i + 1]
  if redis.call('HSETNX', CHILDREN, id, '{"agent":' .. cjson.encode(agent) .. '}') == 1 then
    fresh[#fresh + 1] = '{"id":' .. cjson.encode(id) .. ',"agent":' .. cjson.encode(agent) .. '}'
  end
end
if #fresh == 0 then return { 'ok', 0 } end
append(t, 'ChildTasksSpawned', '"lease":' .. t.lease .. ',"children":[' .. table.concat(fresh, ',') .. ']')
return { 'ok', #fresh }
