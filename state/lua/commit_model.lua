-- Commit a churn-model snapshot together with the labels it has learned.
--
-- KEYS[1]   snapshot hash  <prefix>:{model}:churn  (header, blob)
-- KEYS[2]   label queue    <prefix>:{model}:labels (list of JSON labels, oldest first)
-- KEYS[3]   learned ids    <prefix>:{model}:learned (zset: label id -> wall ms learned)
-- ARGV[1]   the snapshot version the learner started from (0: none)
-- ARGV[2]   header JSON of the new snapshot (its "version" is ARGV[1] + 1)
-- ARGV[3]   blob
-- ARGV[4]   queue entries consumed (the first ARGV[4] of the list)
-- ARGV[5]   wall ms now; ARGV[6] how long learned ids are remembered, ms
-- ARGV[7..] ids of the labels learned
--
-- All keys share the {model} hash tag (one slot, also on Redis Cluster). The
-- snapshot, the queue's head and the learned ids change together or not at
-- all: a crash leaves each label either queued or in the snapshot, never both.
-- Returns 1, or 0 when another learner committed first (the caller reloads).
local head = redis.call('HGET', KEYS[1], 'header')
local version = 0
if head then
  local ok, h = pcall(cjson.decode, head)
  if ok and type(h) == 'table' and tonumber(h.version) then version = tonumber(h.version) end
end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'header', ARGV[2], 'blob', ARGV[3])
local n = tonumber(ARGV[4])
if n > 0 then redis.call('LTRIM', KEYS[2], n, -1) end
local now = tonumber(ARGV[5])
for i = 7, #ARGV do redis.call('ZADD', KEYS[3], now, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
return 1
