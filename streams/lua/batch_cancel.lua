--[[
  batch_cancel: a client cancels a batch (BatchCancelled); the client then cancels its unfinished tasks, whose
  ends are still counted. Cancelling a cancelled batch changes nothing; a completed one cannot be cancelled.
  KEYS[1..4] batch hash, log, tasks, ended
  ARGV[1..2] batch id, now
  Returns { "ok", "BatchCancelled" | "" } | { "rejected", "BatchNotFound" | "BatchAlreadyFinished", "" }
]]
local b = load_batch()
if b == nil then return { 'rejected', 'BatchNotFound', '' } end
if b.status == 'cancelled' then return { 'ok', '' } end
if b.status == 'completed' then return { 'rejected', 'BatchAlreadyFinished', '' } end
redis.call('HSET', B, 'status', 'cancelled')
append_batch(b, 'BatchCancelled', '')
return { 'ok', 'BatchCancelled' }
