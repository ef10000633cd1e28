-- Read what a batch needs for several members, in one round trip and one consistent snapshot.
-- ARGV[1] = number of members; ARGV[1 + m] = how many string keys member m has after its two hashes;
-- then the hash fields of the trailing keys.
-- KEYS: per member: ledger hash, profile hash, its string keys (answers, claims, periods...);
-- then any trailing hash keys (the global owner index buckets, when they share the node).
-- Returns, per member: version, ledger JSON, profile JSON, its values; then the trailing values.
local members = tonumber(ARGV[1])
local out = {}
local n_out = 0
local k = 1
for m = 1, members do
  local n = tonumber(ARGV[1 + m])
  local ledger = redis.call('HMGET', KEYS[k], 'v', 'd')
  out[n_out + 1] = ledger[1] or '0'
  out[n_out + 2] = ledger[2] or ''
  out[n_out + 3] = redis.call('HGET', KEYS[k + 1], 'd') or ''
  n_out = n_out + 3
  for i = k + 2, k + 1 + n do
    n_out = n_out + 1
    out[n_out] = redis.call('GET', KEYS[i]) or ''
  end
  k = k + 2 + n
end
local first = k
for i = k, #KEYS do
  n_out = n_out + 1
  out[n_out] = redis.call('HGET', KEYS[i], ARGV[2 + members + i - first]) or ''
end
return out
