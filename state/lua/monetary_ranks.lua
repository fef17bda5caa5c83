-- Ranks of a batch's monetary values in the live distribution, in one call.
--
-- KEYS[1]  <p>:{rfm}:m    zset  customer -> monetary cents
-- KEYS[2]  <p>:{rfm}:agg  hash  sum (cents), ...
-- ARGV     monetary values (cents)
-- Returns {below_1, equal_1, below_2, equal_2, ..., count, sum}.
local out = {}
for i = 1, #ARGV do
  local v = ARGV[i]
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. v)
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], v, v)
end
out[#out + 1] = redis.call('ZCARD', KEYS[1])
out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0')
return out
