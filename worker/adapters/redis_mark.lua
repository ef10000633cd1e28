-- Advance the state marker (see worker/marker.py) after a batch's state is durable.
-- KEYS[1] marker hash; ARGV[1] the epoch the caller works under; then triples
-- (field, floor, next offset): floor is what this caller itself last advanced the field to (-1 if
-- nothing yet). Fails with STATE_LOST when the marker is gone, belongs to another epoch, or is below
-- the floor (Redis lost writes since the caller's previous batch): the batch must not be published.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then
  return redis.error_reply('STATE_LOST marker epoch ' .. tostring(epoch) .. ' is not ' .. ARGV[1])
end
for i = 2, #ARGV, 3 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  local floor, next = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if current < floor then
    return redis.error_reply('STATE_LOST ' .. ARGV[i] .. ' is back at ' .. current .. ' from ' .. floor)
  end
  if next > current then
    redis.call('HSET', KEYS[1], ARGV[i], next)
  end
end
return 1
