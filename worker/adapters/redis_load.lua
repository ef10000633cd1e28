-- Read what one member's messages need, in one round trip and one consistent snapshot.
-- KEYS[1] ledger hash, KEYS[2] profile hash, KEYS[3..] string keys (answers, claims, periods...)
-- Returns {version, ledger JSON, profile JSON, value of KEYS[3], value of KEYS[4], ...}
local out = {redis.call('HGET', KEYS[1], 'v') or '0', redis.call('HGET', KEYS[1], 'd') or '',
             redis.call('HGET', KEYS[2], 'd') or ''}
for i = 3, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
