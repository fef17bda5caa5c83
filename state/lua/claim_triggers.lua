-- Trigger policy for one customer, atomically next to the profile (SPEC §5.10):
-- release held triggers whose quiet hours ended, then claim new triggers once
-- each, count marketing ones against the daily cap, hold those due in quiet
-- hours, and open an uplift exposure for each one that goes out.
--
-- What goes out now (emitted and released records) and the outcome counters
-- are also written to the customer's outbox hash under this settlement's
-- token, in the same atomic call: until the sink confirms delivery (and then
-- deletes the entry), a restart can re-emit them and count them (state/outbox.py).
--
-- KEYS[1]   profile hash, KEYS[2] orders hash, KEYS[3] outbox hash (all under
--           the customer's tag)
-- KEYS[4..] per trigger, in order: its emitted-once key, then its day's cap key
-- ARGV[1]   marketing triggers allowed per customer per day
-- ARGV[2]   TTL of the emitted-once keys, seconds
-- ARGV[3]   TTL of the cap counters, seconds
-- ARGV[4]   uplift window, ms
-- ARGV[5]   event-time now: held triggers due by then are released
-- ARGV[6]   JSON list of {m = marketing 0/1, ts, kind, h = holdout 0/1,
--           q = end of the quiet hours it falls in (0 = none), rec = record as JSON text}
-- ARGV[7]   settlement token (the outbox entry's field)
--
-- Returns JSON {out = ["emit"|"held"|"dup"|"capped", ...],
--               released = [record, ...], n = {counter = increment}}
local P, O, OB = KEYS[1], KEYS[2], KEYS[3]
local token = ARGV[7]
local cap = tonumber(ARGV[1])
local claim_ttl, cap_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local uplift_ms, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local triggers = cjson.decode(ARGV[6])

local raw_up, raw_hq = unpack(redis.call('HMGET', P, 'up', 'hq'))
local up = raw_up and cjson.decode(raw_up) or {}
local held = raw_hq and cjson.decode(raw_hq) or {}
local up_changed, held_changed = false, false

local released, kept = {}, {}
for _, x in ipairs(held) do
  if x.q <= now then table.insert(released, x.rec) else table.insert(kept, x) end
end
if #released > 0 then held, held_changed = kept, true end

-- orders placed (counted or later cancelled) in (ts, ts + window]
local placed = nil
local function ordered_after(ts)
  if placed == nil then
    placed = {}
    local all = redis.call('HGETALL', O)
    for i = 2, #all, 2 do
      local ots, _, st = string.match(all[i], '^(-?%d+)|(-?%d+)|(%a)$')
      if st == 'P' or st == 'X' then table.insert(placed, tonumber(ots)) end
    end
  end
  for _, ots in ipairs(placed) do
    if ts < ots and ots <= ts + uplift_ms then return true end
  end
  return false
end

local n, counted = {}, false
local function count(name)
  n[name] = (n[name] or 0) + 1
  counted = true
end
local function group(h) if h == 1 then return 'holdout' else return 'treated' end end

local out, sent = {}, {}
for i, t in ipairs(triggers) do
  local claim_key, cap_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  if not redis.call('SET', claim_key, '1', 'NX', 'EX', claim_ttl) then
    table.insert(out, 'dup')
  elseif t.m == 1 and tonumber(redis.call('GET', cap_key) or '0') >= cap then
    -- claimed all the same: a replay decides the same and must not emit it later
    table.insert(out, 'capped')
    count('suppressed:' .. t.kind)
  else
    if t.m == 1 then
      redis.call('INCR', cap_key)
      redis.call('EXPIRE', cap_key, cap_ttl)
      local converted = 0
      count('uplift:' .. t.kind .. ':' .. group(t.h) .. ':sent')
      if ordered_after(t.ts) then
        converted = 1
        count('uplift:' .. t.kind .. ':' .. group(t.h) .. ':converted')
      end
      table.insert(up, {t.kind, t.ts, t.h, converted})
      up_changed = true
    end
    if t.q > 0 then
      table.insert(held, {q = t.q, rec = t.rec})
      held_changed = true
      table.insert(out, 'held')
      count('held:' .. t.kind)
    else
      table.insert(out, 'emit')
      table.insert(sent, t.rec)
    end
  end
end

if up_changed then
  -- the latest 16 exposures are plenty for a 7-day window under a daily cap
  table.sort(up, function(a, b) return a[2] < b[2] end)
  while #up > 16 do table.remove(up, 1) end
  redis.call('HSET', P, 'up', cjson.encode(up))
end
if held_changed then
  if #held == 0 then redis.call('HDEL', P, 'hq') else redis.call('HSET', P, 'hq', cjson.encode(held)) end
end
for _, rec in ipairs(released) do table.insert(sent, rec) end
if #sent > 0 or counted then
  redis.call('HSET', OB, token, cjson.encode({r = sent, n = n}))
end
return cjson.encode({out = out, released = released, n = n, ob = (#sent > 0 or counted)})
