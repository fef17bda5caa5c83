-- Apply one customer's events of a batch, atomically, in one call.
--
-- KEYS[1]   profile hash       <prefix>:{c:<id>}   (or {a:<id>} for an anonymous visitor)
-- KEYS[2]   orders hash        <prefix>:{c:<id>}:o  order_id -> "ts|net_cents|state"
-- KEYS[3]   dedup record       <prefix>:{c:<id>}:d  the applied events' digests (see below)
-- ARGV[1]   dedup window, seconds: of event time for the digests, of wall time for the key
-- ARGV[2]   rolling window for view/cart day counts, days
-- ARGV[3]   order retention, ms (older order records are pruned)
-- ARGV[4]   event-time now (watermark), ms
-- ARGV[5]   TTL of an anonymous profile, seconds (0 = a known customer: no TTL)
-- ARGV[6]   events, a JSON array of compact events (see state/customers.py)
-- ARGV[7]   uplift window, ms: an order this soon after a trigger converts it
-- ARGV[8]   abandoned_after, ms: a cart's deadline after its last activity
-- ARGV[9]   the events' digests, DIGEST bytes each, same order as the events
-- ARGV[10]  batch call id ("" = none) and KEYS[4] the customer's reply memo hash:
--           the reply is kept under the call id, and the same call of a batch
--           read again after a crash gets it back (with `again` set and the
--           current pending effects) instead of seeing its events as duplicates
--
-- The dedup record is one string of fixed-size entries, in the order applied:
-- an event's digest (a 48-bit hash of its event_id) and its event time in
-- minutes (4 bytes, big endian). It keeps the events of the last dedup window
-- of event time (the watermark), at most MAX_DIGESTS of them: about 10 bytes
-- an event instead of a key each.
--
-- Every update is order-insensitive where it can be (min/max/sums), so two
-- workers or a late event converge on the same state. Returns a JSON object:
-- {applied, dup, dups=[index of each duplicate event], redirect?, old={n,m}, final={...},
--  marks=[...], orders=[[ts,net]...], conversions=[[kind, holdout]...], pe?, again?}

local P, O = KEYS[1], KEYS[2]
local dedup_ttl = tonumber(ARGV[1])
local window_days = tonumber(ARGV[2])
local retention_ms = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local anon_ttl = tonumber(ARGV[5])
local events = cjson.decode(ARGV[6])
local uplift_ms = tonumber(ARGV[7])
local after_ms = tonumber(ARGV[8])
local digests = ARGV[9]
local batch = ARGV[10] or ''
local memo_field = batch ~= '' and batch or nil
local D = KEYS[3]
local DIGEST, ENTRY, MAX_DIGESTS = 6, 10, 1000

if memo_field then
  local kept = redis.call('HGET', KEYS[4], memo_field)
  if kept then
    local r = cjson.decode(kept)
    r.again = 1
    local pe_now = redis.call('HGET', P, 'pe')
    r.pe = pe_now and cjson.decode(pe_now) or nil
    return cjson.encode(r)
  end
end

-- A visitor already stitched to a customer: hand the events to that customer.
local to = redis.call('HGET', P, 'to')
if to then
  return cjson.encode({applied = 0, dup = 0, redirect = to})
end

local F = {'fa', 'la', 'fo', 'lo', 'n', 'm', 'vd', 'cd', 'cat', 'pd', 'lod', 'cart', 'ca', 's', 't', 'iv', 'ev',
           'cov', 'ls', 'lst', 'lpos', 'lpt', 'up', 'acf', 'acl', 'js', 'hq', 'lap', 'alc',
           'chs', 'cx', 'csa', 'nab', 'cs', 'pe'}
local raw = redis.call('HMGET', P, unpack(F))
local p = {}
for i, name in ipairs(F) do p[name] = raw[i] end
local function num(v) if v then return tonumber(v) end return nil end
local fa, la, fo, lo = num(p.fa), num(p.la), num(p.fo), num(p.lo)
local n, m = num(p.n) or 0, num(p.m) or 0
local old_n, old_m, was_known = n, m, fa ~= nil
local function jget(v, default) if v then return cjson.decode(v) end return default end
local vd, cd = jget(p.vd, {}), jget(p.cd, {})
local cat = jget(p.cat, {})
local cart = jget(p.cart, {})
local pd, lod, ca = jget(p.pd, {}), num(p.lod), num(p.ca)
-- cov: sku -> time of the latest order that contained it, so a cart_add that
-- arrives after the order covering it (out of order) does not reopen the cart
local cov = jget(p.cov, {})
local ls, lst, lpos, lpt = p.ls, num(p.lst), p.lpos, num(p.lpt)
local up = jget(p.up, {})  -- exposures: {kind, trigger ts, holdout 0/1, converted 0/1}
-- lapsed carts: {last activity, lines} whose deadline passed before a later event
-- of this customer was applied; each is decided on its own at its deadline, so a
-- batch holding both the deadline and later events decides as a live run would
local lap, alc, acf = jget(p.lap, {}), num(p.alc), num(p.acf)
local conversions = {}
local channels = {}
-- chs: channel -> first activity, one small map for the churn features' channel
-- count. A first use, unlike a last one, is still right for any earlier moment
-- judged after later events of the same batch were applied.
local chs = jget(p.chs, {})
local touched = {}

local function minv(a, b) if a == nil or b < a then return b end return a end
local function maxv(a, b) if a == nil or b > a then return b end return a end

-- day rings: list of {day, count}; bump one day, drop days outside the window
local function ring_add(ring, day, count)
  for _, e in ipairs(ring) do
    if e[1] == day then e[2] = e[2] + count; return end
  end
  table.insert(ring, {day, count})
end
local function ring_prune(ring, newest)
  local kept = {}
  for _, e in ipairs(ring) do
    if e[1] > newest - window_days then table.insert(kept, e) end
  end
  table.sort(kept, function(a, b) return a[1] < b[1] end)
  return kept
end

-- favourite categories: at most 8 counters; a new one replaces the smallest
local function cat_add(name, count)
  if cat[name] then cat[name] = cat[name] + count; return end
  local size, smallest, low = 0, nil, nil
  for k, v in pairs(cat) do
    size = size + 1
    if low == nil or v < low then smallest, low = k, v end
  end
  if size >= 8 then cat[smallest] = nil end
  cat[name] = count
end

-- premium-line browsing days: a small sorted set of distinct days after the
-- last order day (an order ends a run), at most the last 14
local function premium_day(day)
  if lod ~= nil and day <= lod then return end
  for _, d in ipairs(pd) do if d == day then return end end
  table.insert(pd, day)
  table.sort(pd)
  while #pd > 14 do table.remove(pd, 1) end
end
local function order_day(day)
  lod = maxv(lod, day)
  local kept = {}
  for _, d in ipairs(pd) do if d > lod then table.insert(kept, d) end end
  pd = kept
end

-- orders: "ts|net|state", state P = counted, X = cancelled, C = cancel seen
-- before the order, R = return seen before the order (net holds -refund)
local function oget(oid)
  local v = redis.call('HGET', O, oid)
  if not v then return nil end
  local ts, net, st = string.match(v, '^(-?%d+)|(-?%d+)|(%a)$')
  return {tonumber(ts), tonumber(net), st}
end
local function oset(oid, ts, net, st)
  redis.call('HSET', O, oid, string.format('%d|%d|%s', ts, net, st))
end
local function recompute_last_order()
  local all = redis.call('HGETALL', O)
  local newest = nil
  for i = 2, #all, 2 do
    local ts, _, st = string.match(all[i], '^(-?%d+)|(-?%d+)|(%a)$')
    if st == 'P' then newest = maxv(newest, tonumber(ts)) end
  end
  lo = newest
  if n == 0 then fo = nil; lo = nil end
end

-- where the customer was last seen: a store (clicks in store, pickups, POS) or a
-- delivery address; the latest by event time wins
local function seen_at_store(store, ts)
  if store and (lst == nil or ts >= lst) then ls, lst = store, ts end
end
local function seen_at_position(lat, lon, ts)
  if lat and (lpt == nil or ts >= lpt) then lpos, lpt = string.format('%.6f,%.6f', lat, lon), ts end
end

local function lapse(ts)
  if ca == nil or next(cart) == nil or ca + after_ms > ts then return end
  if (acf and ca <= acf) or (alc and ca <= alc) then return end
  local snap = {}
  for sku, line in pairs(cart) do snap[sku] = {line[1], line[2], line[3]} end
  table.insert(lap, {ca, snap})
  while #lap > 4 do table.remove(lap, 1) end
  alc = ca
end

-- one cart event on a set of lines {sku: {qty, unit price, last added}}; an add
-- that an order placed after it already covered (it arrived late) is skipped
local function cart_change(lines, k, e, ts)
  if k == 'ca' and not (cov[e.sku] and cov[e.sku] >= ts) then
    local line = lines[e.sku] or {0, 0, 0}
    lines[e.sku] = {line[1] + e.q, e.p or line[2], maxv(line[3], ts)}
  elseif k == 'cr' then
    local line = lines[e.sku]
    if line then
      local left = e.q and (line[1] - e.q) or 0
      if left <= 0 then lines[e.sku] = nil else line[1] = left end
    end
  end
end

-- a late cart event from before a lapsed cart's deadline changes that cart too
-- (and moves its deadline), as it would have had it arrived in order
local function lap_cart_event(k, e, ts)
  for _, l in ipairs(lap) do
    if ts < l[1] + after_ms then
      cart_change(l[2], k, e, ts)
      l[1] = maxv(l[1], ts)
      alc = maxv(alc, l[1])
    end
  end
end

-- uplift: a newly placed order converts every open exposure it falls after
local function convert(ts)
  for _, x in ipairs(up) do
    if x[4] == 0 and x[2] < ts and ts <= x[2] + uplift_ms then
      x[4] = 1
      table.insert(conversions, {x[1], x[3]})
    end
  end
end

-- the dedup record, and the entries this call adds to it
local record = redis.call('GET', D) or ''
local window_start = math.floor(now / 60000) - math.floor(dedup_ttl / 60)
local added, added_set = {}, {}
-- is `digest` in the record? (only at an entry's start counts)
local function recorded(digest)
  local pos = string.find(record, digest, 1, true)
  while pos and (pos - 1) % ENTRY ~= 0 do pos = string.find(record, digest, pos + 1, true) end
  return pos ~= nil
end

local applied, dup, marks, dups = 0, 0, {}, {}
local newest_day = nil
for i, e in ipairs(events) do
  local digest = string.sub(digests, (i - 1) * DIGEST + 1, i * DIGEST)
  local fresh = not added_set[digest] and not recorded(digest)
  if fresh then
    added_set[digest] = true
    -- a stitch (no event time) or an event older than the window is stamped
    -- with the window's start: kept at least until the watermark moves on
    local minute = math.max(math.floor(e.ts / 60000), window_start)
    table.insert(added, digest .. struct.pack('>I4', minute))
  end
  if not fresh then
    dup = dup + 1
    table.insert(dups, i)
  else
    applied = applied + 1
    local k, ts, day = e.k, e.ts, e.d
    if k ~= 'st' then
      lapse(ts)
      fa = minv(fa, ts); la = maxv(la, ts)
      newest_day = maxv(newest_day, day)
      if e.ch then
        channels[e.ch] = maxv(channels[e.ch] or num(redis.call('HGET', P, 'c:' .. e.ch)), ts)
        chs[e.ch] = minv(chs[e.ch], ts)
      end
      seen_at_store(e.st, ts)
      seen_at_position(e.lat, e.lon, ts)
    end
    if k == 'v' then
      ring_add(vd, day, 1)
      if e.cat then cat_add(e.cat, 1) end
      if e.pr == 1 then
        premium_day(day)
        table.insert(marks, {i = i, ts = ts, n = n, m = m, fo = fo, lo = lo, pd = pd})
      end
    elseif k == 'ca' or k == 'cr' or k == 'cs' then
      ring_add(cd, day, 1)
      ca = maxv(ca, ts)
      lap_cart_event(k, e, ts)
      cart_change(cart, k, e, ts)
    elseif k == 'op' then
      local o = oget(e.oid)
      if o == nil or o[3] == 'R' then
        local net = e.tot + (o and o[2] or 0)
        oset(e.oid, ts, net, 'P')
        n = n + 1; m = m + net
        fo = minv(fo, ts); lo = maxv(lo, ts)
        convert(ts)
      elseif o[3] == 'C' then
        oset(e.oid, ts, 0, 'X')
        convert(ts)
      end
      -- the order covers the cart lines it contains that were added before it,
      -- and ends a premium run
      for _, sku in ipairs(e.skus or {}) do
        local line = cart[sku]
        if line and line[3] <= ts then cart[sku] = nil end
        cov[sku] = maxv(cov[sku], ts)
        -- a late order placed before a lapsed cart's deadline covers it too
        for _, l in ipairs(lap) do
          local ll = l[2][sku]
          if ll and ll[3] <= ts and ts < l[1] + after_ms then l[2][sku] = nil end
        end
      end
      order_day(day)
      table.insert(marks, {i = i, ts = ts, n = n, m = m, fo = fo, lo = lo})
    elseif k == 'oc' then
      local o = oget(e.oid)
      if o == nil then
        oset(e.oid, ts, 0, 'C')
      elseif o[3] == 'P' then
        n = n - 1; m = m - o[2]
        oset(e.oid, o[1], 0, 'X')
        recompute_last_order()
      end
      table.insert(marks, {i = i, ts = ts, n = n, m = m, fo = fo, lo = lo})
    elseif k == 'or' then
      local o = oget(e.oid)
      if o == nil then
        oset(e.oid, ts, -e.tot, 'R')
      elseif o[3] == 'P' then
        -- a refund never takes an order below zero
        local refund = math.min(e.tot, math.max(o[2], 0))
        m = m - refund
        oset(e.oid, o[1], o[2] - refund, 'P')
      elseif o[3] == 'R' then
        oset(e.oid, o[1], o[2] - e.tot, 'R')
      end
      table.insert(marks, {i = i, ts = ts, n = n, m = m, fo = fo, lo = lo})
    elseif k == 'st' then
      -- stitch: merge an anonymous visitor's history into this customer
      local a = e.a
      if a.fa then fa = minv(fa, tonumber(a.fa)) end
      if a.la then la = maxv(la, tonumber(a.la)) end
      for _, x in ipairs(a.vd and cjson.decode(a.vd) or {}) do ring_add(vd, x[1], x[2]); newest_day = maxv(newest_day, x[1]) end
      for name, c in pairs(a.cat and cjson.decode(a.cat) or {}) do cat_add(name, c) end
      for _, d in ipairs(a.pd and cjson.decode(a.pd) or {}) do premium_day(d) end
      for ch, t in pairs(a.chs and cjson.decode(a.chs) or {}) do chs[ch] = minv(chs[ch], t) end
      for key, v in pairs(a) do
        if string.sub(key, 1, 2) == 'c:' then
          local ch = string.sub(key, 3)
          channels[ch] = maxv(channels[ch] or num(redis.call('HGET', P, key)), tonumber(v))
        end
      end
    end
  end
end

if applied > 0 then
  if newest_day then vd = ring_prune(vd, newest_day); cd = ring_prune(cd, newest_day) end
  local w = {'n', n, 'm', m,
             'vd', cjson.encode(vd), 'cd', cjson.encode(cd), 'cat', cjson.encode(cat)}
  local function put(name, v) if v ~= nil then table.insert(w, name); table.insert(w, string.format('%d', v)) end end
  put('fa', fa); put('la', la); put('fo', fo); put('lo', lo); put('lod', lod); put('ca', ca)
  table.insert(w, 'pd'); table.insert(w, cjson.encode(pd))
  for ch, ts in pairs(channels) do
    table.insert(w, 'c:' .. ch); table.insert(w, string.format('%d', ts))
  end
  if next(chs) ~= nil then table.insert(w, 'chs'); table.insert(w, cjson.encode(chs)) end
  if next(cart) == nil then redis.call('HDEL', P, 'cart') else table.insert(w, 'cart'); table.insert(w, cjson.encode(cart)) end
  -- keep only coverage that can still matter: the last 2 days before the newest, at most 32
  local newest_cov, kept_cov, size = nil, {}, 0
  for _, t in pairs(cov) do newest_cov = maxv(newest_cov, t) end
  for sku, t in pairs(cov) do
    if t >= newest_cov - 2 * 86400000 and size < 32 then kept_cov[sku] = t; size = size + 1 end
  end
  if size > 0 then table.insert(w, 'cov'); table.insert(w, cjson.encode(kept_cov)) end
  if ls then table.insert(w, 'ls'); table.insert(w, ls); put('lst', lst) end
  if lpos then table.insert(w, 'lpos'); table.insert(w, lpos); put('lpt', lpt) end
  if #conversions > 0 then table.insert(w, 'up'); table.insert(w, cjson.encode(up)) end
  local kept_lap = {}
  for _, l in ipairs(lap) do
    if next(l[2]) ~= nil and not (acf and l[1] <= acf) then table.insert(kept_lap, l) end
  end
  lap = kept_lap
  if #lap == 0 then redis.call('HDEL', P, 'lap') else table.insert(w, 'lap'); table.insert(w, cjson.encode(lap)) end
  put('alc', alc)
  if lo == nil then redis.call('HDEL', P, 'fo', 'lo') end
  redis.call('HSET', P, unpack(w))
  if anon_ttl > 0 then redis.call('EXPIRE', P, anon_ttl) end
  -- the dedup record: entries in the order applied; those that fell out of
  -- the window leave from the front, and the oldest go first over the bound
  local start = 1
  while start + ENTRY - 1 <= #record
      and struct.unpack('>I4', record, start + DIGEST) < window_start do
    start = start + ENTRY
  end
  local kept = string.sub(record, start) .. table.concat(added)
  if #kept > MAX_DIGESTS * ENTRY then kept = string.sub(kept, #kept - MAX_DIGESTS * ENTRY + 1) end
  redis.call('SET', D, kept, 'EX', dedup_ttl)
end

-- Effects outside this slot (the M distribution, conversion counters) stay in
-- the profile as 'pe' until the caller has applied them and deleted it in one
-- transaction (CustomerStore.update_monetary): a batch read again after a crash
-- in between finds them still pending, and they count once.
local pe = p.pe and cjson.decode(p.pe) or nil
if applied > 0 and anon_ttl == 0 then
  if pe == nil then pe = {n = old_n, m = old_m, c = 0, conv = {}} end
  if (not was_known) and fa ~= nil then pe.c = 1 end
  for _, c in ipairs(conversions) do table.insert(pe.conv, c) end
  redis.call('HSET', P, 'pe', cjson.encode(pe))
end

-- order records: drop those past retention, report the counted ones
local orders = {}
local all = redis.call('HGETALL', O)
for i = 1, #all, 2 do
  local ts, net, st = string.match(all[i + 1], '^(-?%d+)|(-?%d+)|(%a)$')
  ts, net = tonumber(ts), tonumber(net)
  if ts < now - retention_ms then
    redis.call('HDEL', O, all[i])
  elseif st == 'P' then
    table.insert(orders, {ts, net})
  end
end

local reply = cjson.encode({
  applied = applied, dup = dup, dups = dups, created = (not was_known) and fa ~= nil,
  old = {n = old_n, m = old_m},
  final = {n = n, m = m, fa = fa, la = la, fo = fo, lo = lo, pd = pd,
           s = p.s or nil, t = p.t or nil, iv = num(p.iv), ev = num(p.ev),
           cart = cart, ca = ca, ls = ls, lpos = lpos,
           acf = acf, acl = num(p.acl), js = p.js, hq = p.hq, lap = lap, alc = alc,
           vd = vd, cd = cd, chs = chs, cx = p.cx or nil, csa = num(p.csa), nab = num(p.nab),
           cs = num(p.cs)},
  marks = marks, orders = orders, conversions = conversions, pe = pe,
})
if memo_field then
  redis.call('HSET', KEYS[4], memo_field, reply)
  redis.call('EXPIRE', KEYS[4], 86400)
end
return reply
