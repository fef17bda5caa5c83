-- Apply a list of inventory operations, atomically and in order, in one call.
--
-- KEYS[1]   base  <prefix>:{inv}
--           Every inventory key is built here from this base: they all share the
--           {inv} hash tag, so they live in one slot (also on Redis Cluster) and
--           one call may touch any number of SKUs. Names (see state/keys.py):
--           <base>:s:<sku>  hash location -> on_hand
--           <base>:m:<sku>  hash "<loc>|<field>" -> reorder and demand figures
--           <base>:lp       hash sku -> list price cents
--           <base>:a:<oid>  string allocation plan (JSON) or "released"
--           <base>:e:<eid>  string dedup marker of a stock event or a sale
-- ARGV[1]   dedup TTL, seconds
-- ARGV[2]   allocation record TTL, seconds
-- ARGV[3]   z of the service level
-- ARGV[4]   EWMA alpha of the daily demand rate
-- ARGV[5]   default lead time, days
-- ARGV[6]   closed demand days needed before a derived reorder point is used
-- ARGV[7]   cover days of a derived order-up-to level
-- ARGV[8]   operations, a JSON array (see state/inventory.py)
-- ARGV[9]   batch id, or "": the reply is kept under <base>:r:<id> and a call
--           with the same id gets it back unchanged (a batch read again after a
--           crash before its decisions were written sees what the first reading saw)
--
-- Returns a JSON object {results = [one per op], reorders = [...]}. Floats in
-- reorders are strings ('%.17g'): cjson would round them to 14 digits.

local B = KEYS[1]
local memo = (ARGV[9] and ARGV[9] ~= '') and (B .. ':r:' .. ARGV[9]) or nil
if memo then
  local seen = redis.call('GET', memo)
  if seen then return seen end
end
local dedup_ttl = tonumber(ARGV[1])
local alloc_ttl = tonumber(ARGV[2])
local z = tonumber(ARGV[3])
local alpha = tonumber(ARGV[4])
local default_lt = tonumber(ARGV[5])
local min_history = tonumber(ARGV[6])
local cover_days = tonumber(ARGV[7])
local ops = cjson.decode(ARGV[8])
local null = cjson.null

local function S(sku) return B .. ':s:' .. sku end
local function A(oid) return B .. ':a:' .. oid end
local function opt(v) if v == nil or v == null then return nil end return v end
local function fmt(v) return string.format('%.17g', v) end

-- per (sku, location) figures, read once and written back at the end
local FIELDS = {'rp', 'max', 'lt', 'arm', 'x', 'dd', 'du', 'mu', 'var', 'nd'}
local meta, loaded = {}, {}
local function M(sku, loc)
  local bysku = meta[sku]
  if bysku == nil then bysku = {}; meta[sku] = bysku end
  local m = bysku[loc]
  if m == nil then
    local names = {}
    for i, f in ipairs(FIELDS) do names[i] = loc .. '|' .. f end
    local raw = redis.call('HMGET', B .. ':m:' .. sku, unpack(names))
    m = {sku = sku, loc = loc, v = {}, dirty = false}
    for i, f in ipairs(FIELDS) do
      if raw[i] then m.v[f] = tonumber(raw[i]) end
    end
    bysku[loc] = m
    table.insert(loaded, m)
  end
  return m
end
local function put(m, f, value)
  if m.v[f] ~= value then m.v[f] = value; m.dirty = true end
end

local function on_hand(sku, loc)
  return tonumber(redis.call('HGET', S(sku), loc)) or 0
end
local function incr(sku, loc, delta)
  return tonumber(redis.call('HINCRBY', S(sku), loc, string.format('%d', delta)))
end

-- fresh event? (exactly once for stock events and sales)
local function fresh(eid)
  return redis.call('SET', B .. ':e:' .. eid, '1', 'NX', 'EX', dedup_ttl) ~= false
end

-- demand rate: an EWMA of units per day, and an exponentially weighted variance
local function close(m, x)
  local v = m.v
  if (v.nd or 0) == 0 or v.mu == nil then
    v.mu, v.var = x, 0
  else
    local diff = x - v.mu
    local inc = alpha * diff
    v.mu = v.mu + inc
    v.var = (1 - alpha) * ((v.var or 0) + diff * inc)
  end
  v.nd = (v.nd or 0) + 1
  m.dirty = true
end
local function roll(m, day)
  local v = m.v
  if v.dd ~= nil and day > v.dd then
    close(m, v.du or 0)
    local empty = day - v.dd - 1
    if empty > 366 then empty = 366 end
    for _ = 1, empty do close(m, 0) end
    v.dd, v.du = day, 0
    m.dirty = true
  end
end
local function demand(m, day, q)
  roll(m, day)
  local v = m.v
  -- a late sale for an earlier (closed) day counts on the open day: an
  -- approximation that keeps the totals right
  if v.dd == nil then v.dd, v.du = day, 0 end
  v.du = (v.du or 0) + q
  m.dirty = true
end

-- (s, S) reorder check after an on_hand change: once per crossing
local reorders = {}
local function check(m, day, op_index)
  local v = m.v
  local lt = v.lt or default_lt
  local rp, derived = v.rp, false
  if rp == nil then
    if v.mu == nil or (v.nd or 0) < min_history then return end
    rp = v.mu * lt + z * math.sqrt(math.max(v.var or 0, 0)) * math.sqrt(lt)
    derived = true
  end
  local level = on_hand(m.sku, m.loc)
  if level <= rp then
    if v.arm ~= 0 then
      local top
      if v.max ~= nil then top = v.max
      elseif v.mu ~= nil then top = rp + cover_days * v.mu
      else top = 2 * rp end
      -- ceil, tolerant of float noise just above an integer
      local qty = math.max(0, math.ceil(top - level - 1e-9))
      -- a reorder of nothing (a derived point worn down to ~0 by months
      -- without demand) is noise: stay armed, say nothing
      if qty <= 0 then return end
      put(m, 'x', (v.x or 0) + 1)
      put(m, 'arm', 0)
      table.insert(reorders, {
        sku = m.sku, location_id = m.loc, on_hand = level,
        reorder_point = fmt(rp), max_level = fmt(top), quantity = qty,
        derived = derived,
        daily_rate = v.mu ~= nil and fmt(v.mu) or null,
        sigma = v.mu ~= nil and fmt(math.sqrt(math.max(v.var or 0, 0))) or null,
        lead_time_days = lt, crossing = v.x, event_day = day, op = op_index,
      })
    end
  elseif v.arm ~= 1 then
    put(m, 'arm', 1)
  end
end

-- A stock event or sale seen again (a batch re-read after a crash between its
-- rounds) gives back the reorders it raised the first time, so they are emitted
-- under the same trigger ids instead of being lost; the claims keep them once.
local function remember(eid, from)
  if #reorders < from then return end
  local mine = {}
  for j = from, #reorders do table.insert(mine, reorders[j]) end
  redis.call('SET', B .. ':e:' .. eid, cjson.encode(mine), 'KEEPTTL')
end
local function recall(eid, op_index)
  local v = redis.call('GET', B .. ':e:' .. eid)
  if v and v ~= '1' then
    for _, r in ipairs(cjson.decode(v)) do r.op = op_index; table.insert(reorders, r) end
  end
end

-- each (sku, location) checked once per op, in the order first touched
local function checker()
  local list, seen = {}, {}
  return function(m)
    if not seen[m] then seen[m] = true; table.insert(list, m) end
  end, function(day, op_index)
    for _, m in ipairs(list) do check(m, day, op_index) end
  end
end

local function configure(e)
  local m = M(e.sku, e.loc)
  for _, f in ipairs({'rp', 'max', 'lt'}) do
    local value = opt(e[f])
    if value ~= nil then put(m, f, value) end
  end
  local lp = opt(e.lp)
  if lp ~= nil then redis.call('HSET', B .. ':lp', e.sku, string.format('%d', lp)) end
  return m
end

local function allocate(e, i)
  local rec = redis.call('GET', A(e.oid))
  if rec then
    if rec == 'released' then return {oid = e.oid, released = true, existing = true} end
    local plan = cjson.decode(rec)
    plan.existing = true
    return plan
  end
  local lines, cands = e.lines, e.cands
  -- whole-order pass: the first candidate that holds every SKU's summed qty
  local need, skus = {}, {}
  for _, l in ipairs(lines) do
    if need[l.sku] == nil then need[l.sku] = 0; table.insert(skus, l.sku) end
    need[l.sku] = need[l.sku] + l.qty
  end
  local whole = nil
  for _, c in ipairs(cands) do
    local ok = true
    for _, sku in ipairs(skus) do
      if on_hand(sku, c[1]) - c[2] < need[sku] then ok = false; break end
    end
    if ok then whole = c[1]; break end
  end
  local add, run = checker()
  local out = {}
  for _, l in ipairs(lines) do
    local at = whole
    if at == nil then
      -- split pass: each line whole at the first candidate that can serve it
      for _, c in ipairs(cands) do
        if on_hand(l.sku, c[1]) - c[2] >= l.qty then at = c[1]; break end
      end
    end
    if at == nil then
      table.insert(out, {sku = l.sku, qty = l.qty, location_id = null, status = 'backorder'})
    else
      incr(l.sku, at, -l.qty)
      local m = M(l.sku, at)
      demand(m, e.day, l.qty)
      add(m)
      table.insert(out, {sku = l.sku, qty = l.qty, location_id = at, status = 'allocated'})
    end
  end
  run(e.day, i)
  local plan = {oid = e.oid, mode = e.mode, lines = out, split = whole == nil}
  redis.call('SET', A(e.oid), cjson.encode(plan), 'EX', alloc_ttl)
  plan.existing = false
  return plan
end

local function release(e, i)
  local rec = redis.call('GET', A(e.oid))
  local back = {}
  if rec == 'released' then return {released = back} end
  if rec then
    local add, run = checker()
    for _, l in ipairs(cjson.decode(rec).lines) do
      if l.status == 'allocated' then
        incr(l.sku, l.location_id, l.qty)
        local m = M(l.sku, l.location_id)
        roll(m, e.day)
        add(m)
        table.insert(back, l)
      end
    end
    run(e.day, i)
  end
  -- the tombstone also stops a late order_placed from allocating
  redis.call('SET', A(e.oid), 'released', 'EX', alloc_ttl)
  return {released = back}
end

local results = {}
for i, e in ipairs(ops) do
  local op, r = e.op, null
  local from = #reorders + 1
  if op == 'set' or op == 'adjust' then
    if not fresh(e.eid) then
      r = {dup = true}
      recall(e.eid, i - 1)
    else
      local m = configure(e)
      roll(m, e.day)
      local before = on_hand(e.sku, e.loc)
      local after
      if op == 'set' then
        redis.call('HSET', S(e.sku), e.loc, string.format('%d', e.on_hand))
        after = e.on_hand
      else
        after = incr(e.sku, e.loc, e.delta)
      end
      check(m, e.day, i - 1)
      remember(e.eid, from)
      r = {on_hand = after, prev = before}
    end
  elseif op == 'sale' then
    if not fresh(e.eid) then
      r = {dup = true}
      recall(e.eid, i - 1)
    else
      local add, run = checker()
      local levels = {}
      for _, l in ipairs(e.lines) do
        levels[l.sku] = incr(l.sku, e.loc, -l.qty)
        local m = M(l.sku, e.loc)
        demand(m, e.day, l.qty)
        add(m)
      end
      run(e.day, i - 1)
      remember(e.eid, from)
      r = {on_hand = levels}
    end
  elseif op == 'alloc' then
    r = allocate(e, i - 1)
  elseif op == 'release' then
    r = release(e, i - 1)
  elseif op == 'peek' then
    local flat = redis.call('HGETALL', S(e.sku))
    r = {}
    for j = 1, #flat, 2 do r[flat[j]] = tonumber(flat[j + 1]) end
  elseif op == 'price' then
    r = tonumber(redis.call('HGET', B .. ':lp', e.sku)) or null
  end
  results[i] = r
end

for _, m in ipairs(loaded) do
  if m.dirty then
    local w = {}
    for _, f in ipairs(FIELDS) do
      if m.v[f] ~= nil then
        table.insert(w, m.loc .. '|' .. f)
        table.insert(w, fmt(m.v[f]))
      end
    end
    if #w > 0 then redis.call('HSET', B .. ':m:' .. m.sku, unpack(w)) end
  end
end

local reply = cjson.encode({results = results, reorders = reorders})
if memo then redis.call('SET', memo, reply, 'EX', dedup_ttl) end
return reply
