-- Compare-and-set one profile field: the caller read `expected` and wants `new`.
-- KEYS[1] profile hash. ARGV[1] field, ARGV[2] expected ("" = absent),
-- ARGV[3] new value ("" = delete). Returns 1 when swapped, 0 when another
-- writer changed the field first (the caller then acts as if it had not read it).
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
