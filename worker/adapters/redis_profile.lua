-- Store a member profile only if it comes from a later offset of its (compacted) topic than the one
-- stored: several workers follow the same topic, and a lagging one must not write an older profile.
-- KEYS[1] profile hash {o = source offset, d = profile JSON, '' when deleted}; ARGV[1] offset, ARGV[2] JSON
local stored = redis.call('HGET', KEYS[1], 'o')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'd', ARGV[2])
return 1
