-- Apply one member's decided effects atomically, only if the member is still at the version the
-- decisions were computed from (compare-and-set; every key is in the member's hash slot).
-- KEYS[1]   the member's ledger hash {v = version, d = ledger JSON}
-- KEYS[2..] string keys to write: first the message-answer keys (with expiry), then the others
-- ARGV[1] expected version; ARGV[2] new ledger JSON or ''; ARGV[3] expiry of message answers (s);
-- ARGV[4] how many of KEYS[2..] are message answers; ARGV[5..] the values, in KEYS[2..] order
local version = redis.call('HGET', KEYS[1], 'v') or '0'
if version ~= ARGV[1] then
  return -1
end
local next_version = tonumber(version) + 1
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'v', next_version, 'd', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'v', next_version)
end
local answers = tonumber(ARGV[4])
for i = 2, #KEYS do
  if i - 1 <= answers then
    redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', ARGV[3])
  else
    redis.call('SET', KEYS[i], ARGV[i + 3])
  end
end
return next_version
