-- Stitch step 1: hand over an anonymous visitor's history, once.
-- KEYS[1] anonymous profile hash. ARGV[1] customer id, ARGV[2] TTL (s) of the
-- "to" marker that redirects the visitor's later events to the customer.
-- Returns the visitor's fields as a flat array, or an empty array when there
-- is nothing (left) to merge.
if redis.call('HGET', KEYS[1], 'to') then return {} end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'to', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return fields
