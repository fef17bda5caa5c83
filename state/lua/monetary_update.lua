-- Keep the live monetary distribution (customers with F >= 1) for a batch, in one call.
--
-- KEYS[1]  <p>:{rfm}:m    zset  customer -> monetary cents
-- KEYS[2]  <p>:{rfm}:agg  hash  sum (cents), count, customers
-- ARGV     triples: customer id, "in" (F >= 1 now, 0/1), monetary cents now
-- ARGV[#]  then the batch's deltas: sum, count, customers (created profiles)
local n = #ARGV - 3
for i = 1, n, 3 do
  if ARGV[i + 1] == '1' then
    redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
local fields = {'sum', 'count', 'customers'}
for j, name in ipairs(fields) do
  local d = tonumber(ARGV[n + j])
  if d ~= 0 then redis.call('HINCRBY', KEYS[2], name, d) end
end
return 1
