-- Read a customer's facts and labels without changing anything.
-- KEYS[1] profile hash, KEYS[2] orders hash. Returns the "final" shape of
-- apply_customer.lua plus the counted orders, as JSON; nil for no profile.
local F = {'fa', 'la', 'fo', 'lo', 'n', 'm', 'pd', 's', 't', 'iv', 'ev',
           'cart', 'ca', 'ls', 'lpos', 'acf', 'acl', 'js', 'hq', 'lap', 'alc',
           'vd', 'cd', 'chs', 'cx', 'csa', 'nab', 'cs'}
local STRINGS = {s = true, t = true, ls = true, lpos = true, js = true, hq = true, cx = true}
local JSON = {pd = true, cart = true, lap = true, vd = true, cd = true, chs = true}
local raw = redis.call('HMGET', KEYS[1], unpack(F))
if not raw[1] and not raw[5] then return nil end
local out = {}
for i, name in ipairs(F) do
  if not raw[i] then -- absent field: leave it out
  elseif STRINGS[name] then out[name] = raw[i]
  elseif JSON[name] then out[name] = cjson.decode(raw[i])
  else out[name] = tonumber(raw[i]) end
end
out.n = out.n or 0
out.m = out.m or 0
local orders = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 2, #all, 2 do
  local ts, net, st = string.match(all[i], '^(-?%d+)|(-?%d+)|(%a)$')
  if st == 'P' then table.insert(orders, {tonumber(ts), tonumber(net)}) end
end
return cjson.encode({final = out, orders = orders})
