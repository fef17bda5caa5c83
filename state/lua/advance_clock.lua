-- Durable watermark basis: keep the maximum event time ever seen.
-- KEYS[1] clock hash. ARGV[1] candidate basis (ms); ARGV[2] candidate highest
-- event time applied (ms, optional: what the basis becomes once every
-- partition is at its end, also after a restart that re-reads none of it).
-- Returns the basis.
local cur = tonumber(redis.call('HGET', KEYS[1], 'max_event_ms') or '0')
local cand = tonumber(ARGV[1])
local high = tonumber(ARGV[2] or '0')
if high > tonumber(redis.call('HGET', KEYS[1], 'highest_ms') or '0') then
  redis.call('HSET', KEYS[1], 'highest_ms', string.format('%d', high))
end
if cand > cur then
  redis.call('HSET', KEYS[1], 'max_event_ms', string.format('%d', cand))
  return string.format('%d', cand)
end
return string.format('%d', cur)
