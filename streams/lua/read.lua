--[[
  read: the task's state for a reader (getTask, getState) in one call: what a claim replies, without
  claiming. Writes nothing.
  KEYS[1..3] task hash, history, partition log (not touched)
  ARGV[1..3] prefix, task id, now (unused)
  Returns { "ok", <the hash as one JSON object>, <history entry holding the payload, or its chain as a list>,
  <… the output> (false:
  none), [<steering messages>, <wait items>, <results as a flat list>, <children as a flat list>] (only for a
  task with side data: lib.lua's side_view) }, or { "ok" } when the task has no hash (never existed, or its hot
  data expired). The hash goes as one JSON string: a client decodes it faster than ~40 reply elements.
]]
local t = load_task()
if t == nil or t.flat == nil then return { 'ok' } end
local fields, flat = {}, t.flat
for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
return side_view(t, { 'ok', cjson.encode(fields), payload_entries(t),
  t.outputAt and redis.call('LINDEX', LOG, t.outputAt) or false })
