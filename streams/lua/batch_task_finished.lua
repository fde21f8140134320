--[[
  batch_task_finished: a task of the batch ended (BatchTaskFinished, with the progress), counted once. The
  last end of an active batch completes it (BatchCompleted, with the counts). Once every task has ended, the
  batch's keys expire after the retention given. Sent by the task's follow-up step (src/FollowUp.ts).
  KEYS[1..4] batch hash, log, tasks, ended
  ARGV[1..2] batch id, now
  ARGV[3] task id   ARGV[4] its end (completed|failed|cancelled|expired)   ARGV[5] retention (s, 0: keep)
  Returns { "ok", finished, total } | { "rejected", "BatchNotFound" | "TaskNotCounted", "" | "notInBatch" | "alreadyCounted" }
]]
local task, status, retention = ARGV[3], ARGV[4], tonumber(ARGV[5])
local b = load_batch()
if b == nil then return { 'rejected', 'BatchNotFound', '' } end
if redis.call('HEXISTS', BTASKS, task) == 0 then return { 'rejected', 'TaskNotCounted', 'notInBatch' } end
if redis.call('HSETNX', BENDED, task, status) == 0 then return { 'rejected', 'TaskNotCounted', 'alreadyCounted' } end
redis.call('HINCRBY', B, status, 1)
local finished = redis.call('HLEN', BENDED)
append_batch(b, 'BatchTaskFinished', '"taskId":' .. cjson.encode(task) .. ',"status":"' .. status .. '","finished":' ..
  finished .. ',"total":' .. b.total)
if finished == b.total then
  if b.status == 'active' then
    redis.call('HSET', B, 'status', 'completed')
    local c = redis.call('HMGET', B, 'completed', 'failed', 'cancelled', 'expired')
    append_batch(b, 'BatchCompleted', '"completed":' .. c[1] .. ',"failed":' .. c[2] .. ',"cancelled":' .. c[3] ..
      ',"expired":' .. c[4])
  end
  if retention > 0 then
    for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, retention) end
  end
end
return { 'ok', finished, b.total }
