-- Restore a member's ledger during a rebuild (python -m worker rebuild): the ledger with the most
-- changes wins, whatever order the outbound topics are read in (a republished duplicate carries
-- the state of its first publication).
-- KEYS[1] ledger hash; ARGV[1] change count of the ledger; ARGV[2] the ledger.
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'v') or '-1') then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
end
return 1
