-- Restore one member's ledger, request answer and period marker from an outbound event during a
-- rebuild (python -m worker rebuild); claim records are written by the caller.
-- KEYS[1] ledger hash; KEYS[2] the request answer key (or the ledger again); KEYS[3] the period
-- marker (optional). ARGV[1] change count of the ledger after the event; ARGV[2] the ledger, or ''
-- if the event left it as it was; ARGV[3] the request's stored answer, or ''.
-- A republished (duplicate) event carries the state of its first publication, so the ledger with the
-- most changes wins and an answer is set once.
local changes = tonumber(ARGV[1])
if ARGV[2] ~= '' and changes > tonumber(redis.call('HGET', KEYS[1], 'v') or '-1') then
  redis.call('HSET', KEYS[1], 'v', changes, 'd', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'NX')
end
if KEYS[3] then
  redis.call('SET', KEYS[3], '1')
end
return 1
