-- Stitch step 1: hand over an anonymous visitor's history to one customer.
-- KEYS[1] anonymous profile hash. ARGV[1] customer id, ARGV[2] TTL (s) of the
-- "to" marker that redirects the visitor's later events to the customer.
-- Returns the visitor's fields (without "to") as a flat array, or an empty
-- array when there is nothing (left) to merge. The history stays until the
-- caller has merged it (CustomerStore.update_monetary deletes it): a batch read
-- again after a crash in between gets it again, and the customer's dedup
-- marker of the stitch keeps it from being merged twice.
local to = redis.call('HGET', KEYS[1], 'to')
if to and to ~= ARGV[1] then return {} end
local fields = redis.call('HGETALL', KEYS[1])
if not to then
  redis.call('HSET', KEYS[1], 'to', ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
local out = {}
for i = 1, #fields, 2 do
  if fields[i] ~= 'to' then
    table.insert(out, fields[i]); table.insert(out, fields[i + 1])
  end
end
return out
