-- Restore what a batch of outbound events says of their members' state during a rebuild
-- (python -m worker rebuild), in one call: on a single Redis a batch costs one reply, not one per
-- key. ARGV[1] = L, the number of ledgers; then L pairs (change count, ledger) for KEYS[1..L];
-- then per further key: an op — 'n' (set if absent), 's' (set) or 'h' (hash field if absent) — its
-- hash field ('' for the string ops) and its value.
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
  local op = ARGV[a]
  if op == 'n' then
    redis.call('SET', KEYS[k], ARGV[a + 2], 'NX')
  elseif op == 'h' then
    redis.call('HSETNX', KEYS[k], ARGV[a + 1], ARGV[a + 2])
  else
    redis.call('SET', KEYS[k], ARGV[a + 2])
  end
  a = a + 3
end
return 1
