-- Read what a batch needs for several members, in one round trip and one consistent snapshot.
-- ARGV[1] = number of members; ARGV[1 + m] = how many string keys member m has after its two hashes.
-- KEYS: per member: ledger hash, profile hash, its string keys (answers, claims, periods...);
-- then any trailing string keys (the global owner indexes, when they share the node).
-- Returns, per member: version, ledger JSON, profile JSON, its values; then the trailing values.
local members = tonumber(ARGV[1])
local out = {}
local k = 1
for m = 1, members do
  local n = tonumber(ARGV[1 + m])
  out[#out + 1] = redis.call('HGET', KEYS[k], 'v') or '0'
  out[#out + 1] = redis.call('HGET', KEYS[k], 'd') or ''
  out[#out + 1] = redis.call('HGET', KEYS[k + 1], 'd') or ''
  for i = k + 2, k + 1 + n do
    out[#out + 1] = redis.call('GET', KEYS[i]) or ''
  end
  k = k + 2 + n
end
for i = k, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
