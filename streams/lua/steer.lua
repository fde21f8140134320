--[[
  steer: a client adds messages for the task's next turn (TaskSteered). They wait in the task's steering
  list until a turn reports them applied; the running worker is told on the control channel.
  KEYS[1..3] task hash, history, partition log
  ARGV[1..3] prefix, task id, now
  ARGV[4] control channel   ARGV[5] the messages as one JSON array   ARGV[6..] each message (JSON)
  Returns { "ok", pending steering count } | rejected TaskNotFound / TaskAlreadyFinished
]]
local channel, messages = ARGV[4], ARGV[5]
local t = load_task()
if t == nil then return rejected('TaskNotFound', nil) end
if TERMINAL[t.status] then return rejected('TaskAlreadyFinished', t) end
mark_side(t)
local pending = redis.call('LLEN', STEERING)
for i = 6, #ARGV do pending = redis.call('RPUSH', STEERING, ARGV[i]) end
append(t, 'TaskSteered', pieces('"messages":', messages))
redis.call('PUBLISH', channel, '{"type":"steer","taskId":' .. cjson.encode(TASK_ID) .. '}')
return { 'ok', pending }
