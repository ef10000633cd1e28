-- Apply each member's decided effects atomically, only if the member is still at the version the
-- decisions were computed from, and only if the claim/request ids it takes are free or its own.
-- ARGV[1] expiry of message answers (s); ARGV[2] number of members; then per member a header
--   member id, expected version, ledger JSON or '', #index keys, #answer keys, #other keys
-- followed by the hash fields of its index keys, then the values of its answer keys and other keys.
-- KEYS per member: ledger hash, index keys (owner index buckets; only when on this node),
--   message-answer keys (written with expiry), other keys (claims, request answers, periods).
-- Returns per member: the new version, -1 (its state moved on) or -2 (an id belongs to another member).
local ttl = ARGV[1]
local members = tonumber(ARGV[2])
local a = 3
local k = 1
local result = {}
for m = 1, members do
  local member, expected, ledger = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local n_index, n_answers, n_other = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  a = a + 6
  local ledger_key = KEYS[k]
  k = k + 1
  local status = nil
  local version = redis.call('HGET', ledger_key, 'v') or '0'
  if version ~= expected then
    status = -1
  else
    for i = k, k + n_index - 1 do
      local owner = redis.call('HGET', KEYS[i], ARGV[a + i - k])
      if owner then
        local cut = string.find(owner, '\31', 1, true)  -- an archived claim: member US facility US year
        if cut then
          owner = string.sub(owner, 1, cut - 1)
        end
        if owner ~= member then
          status = -2
        end
      end
    end
  end
  if status == nil then
    for i = k, k + n_index - 1 do
      redis.call('HSET', KEYS[i], ARGV[a + i - k], member)
    end
    status = tonumber(version) + 1
    if ledger ~= '' then
      redis.call('HSET', ledger_key, 'v', status, 'd', ledger)
    elseif version ~= '0' then
      redis.call('HSET', ledger_key, 'v', status)
    else
      -- no state, and none to keep (e.g. a claim for a member id that does not exist): no ledger
      -- key is made, so made-up ids leave nothing behind but their expiring message answers
      status = 0
    end
    local first = k + n_index
    local v = a + n_index
    for i = 0, n_answers - 1 do
      redis.call('SET', KEYS[first + i], ARGV[v + i], 'EX', ttl)
    end
    for i = 0, n_other - 1 do
      redis.call('SET', KEYS[first + n_answers + i], ARGV[v + n_answers + i])
    end
  end
  result[m] = status
  k = k + n_index + n_answers + n_other
  a = a + n_index + n_answers + n_other
end
return result
