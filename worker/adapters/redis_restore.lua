-- Restore what a batch of outbound events says of their members' state during a rebuild
-- (python -m worker rebuild), in one call: on a single Redis a batch costs one reply, not one per
-- key. ARGV[1] = L, the number of ledgers; then L pairs (change count, ledger) for KEYS[1..L];
-- then one op per further key: 'n' (set if absent) or 's' (set), each followed by its value.
-- The ledger with the most changes wins, whatever order the outbound topics are read in (a
-- republished duplicate carries the state of its first publication).
local ledgers = tonumber(ARGV[1])
for i = 1, ledgers do
  local changes = ARGV[2 * i]
  if tonumber(changes) > tonumber(redis.call('HGET', KEYS[i], 'v') or '-1') then
    redis.call('HSET', KEYS[i], 'v', changes, 'd', ARGV[2 * i + 1])
  end
end
local a = 2 + 2 * ledgers
for k = ledgers + 1, #KEYS do
  if ARGV[a] == 'n' then
    redis.call('SET', KEYS[k], ARGV[a + 1], 'NX')
  else
    redis.call('SET', KEYS[k], ARGV[a + 1])
  end
  a = a + 2
end
return 1
