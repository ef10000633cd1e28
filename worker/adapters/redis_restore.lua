-- Restore one member's state from an outbound event during a rebuild (python -m worker rebuild).
-- KEYS[1] ledger hash; KEYS[2] the claim record, request answer or '' key (by ARGV[1]); KEYS[3]
-- period marker (optional). ARGV[1] kind: 'settled' | 'reversed' | 'answer' | 'none';
-- ARGV[2] change count of the state after the event; ARGV[3] the ledger, or '' if the event left
-- it as it was; ARGV[4] the record or
-- answer value, or the reversal event's bytes.
-- Events arrive per topic partition in order, and a republished (duplicate) event carries the state
-- of its first publication, so: the ledger with the most changes wins, a record or answer is set
-- once, a reversal is appended once to its record.
local changes = tonumber(ARGV[2])
local stored = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if ARGV[3] ~= '' and changes > stored then
  redis.call('HSET', KEYS[1], 'v', changes, 'd', ARGV[3])
end
local kind = ARGV[1]
if kind == 'settled' or kind == 'answer' then
  redis.call('SET', KEYS[2], ARGV[4], 'NX')
elseif kind == 'reversed' then
  local record = redis.call('GET', KEYS[2])
  if record then
    local first = string.find(record, '\n', 1, true)
    if first and not string.find(record, '\n', first + 1, true) then
      redis.call('APPEND', KEYS[2], '\n' .. ARGV[4])
    end
  end
end
if KEYS[3] then
  redis.call('SET', KEYS[3], '1')
end
return 1
