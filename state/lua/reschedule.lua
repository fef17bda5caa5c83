-- Move a review timer only if nobody else moved it since we read it.
-- KEYS[1] timer zset. ARGV[1] member, ARGV[2] score we saw, ARGV[3] new score or "".
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if seen and tonumber(seen) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1])
else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1
