--[[
  read: the task's state for a reader (getTask, getState) in one call: what a claim replies, without
  claiming. Writes nothing.
  KEYS[1..3] task hash, history, partition log (not touched)
  ARGV[1..3] prefix, task id, now (unused)
  Returns what claim does (see claim.lua), or { "ok" } when the task has no hash (never existed, or its hot
  data expired)
]]
local t = load_task()
if t == nil or t.flat == nil then return { 'ok' } end
return task_view(t, {})
