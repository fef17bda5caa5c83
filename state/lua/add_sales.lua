-- Add one batch's sales to one hour, atomically: counters and distinct sessions.
--
-- KEYS[1]   hour hash   <prefix>:{sales:<hour start ms>}  "<channel>|<field>" -> integer
-- KEYS[2..] one session set per channel that has sessions, <prefix>:{sales:<hour>}:s:<channel>
-- ARGV[1]   TTL of the hour hash, seconds (refreshed on every write)
-- ARGV[2]   TTL of a session set, seconds (refreshed on every write)
-- ARGV[3]   JSON list of [channel, placed, cancelled, returned, gross, refunded,
--           [session ids...], index into KEYS of its session set or 0]
--           (counts as decimal strings: cents must not pass through a double)
--
-- Fields: o placed, x cancelled, r returned, g gross cents, f refunded cents,
-- s distinct sessions. The session count grows by what SADD reports as new, so
-- a redelivered click adds nothing, and the count outlives its set.

local H = KEYS[1]
local ttl, session_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local rows = cjson.decode(ARGV[3])
local names = {'o', 'x', 'r', 'g', 'f'}

for _, row in ipairs(rows) do
  local ch = row[1]
  for j, name in ipairs(names) do
    local v = row[j + 1]
    if v ~= '0' then redis.call('HINCRBY', H, ch .. '|' .. name, v) end
  end
  local ids, slot = row[7], row[8]
  if slot > 0 and #ids > 0 then
    local S, added = KEYS[slot], 0
    -- unpack() is limited in argument count: add in chunks
    for from = 1, #ids, 1000 do
      added = added + redis.call('SADD', S, unpack(ids, from, math.min(from + 999, #ids)))
    end
    if added > 0 then redis.call('HINCRBY', H, ch .. '|s', added) end
    redis.call('EXPIRE', S, session_ttl)
  end
end
redis.call('EXPIRE', H, ttl)
return 1
