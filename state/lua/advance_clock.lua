-- Durable watermark basis: keep the maximum event time ever seen.
-- KEYS[1] clock hash. ARGV[1] candidate max event time (ms). Returns the max.
local cur = tonumber(redis.call('HGET', KEYS[1], 'max_event_ms') or '0')
local cand = tonumber(ARGV[1])
if cand > cur then
  redis.call('HSET', KEYS[1], 'max_event_ms', string.format('%d', cand))
  return string.format('%d', cand)
end
return string.format('%d', cur)
