-- One channel's counters for statistics: nil if it does not exist, else
-- {last id, stored messages, subscriber-count hash}. Drops expired stored messages first, so the
-- counts agree with what a subscriber would get.
-- KEYS: 1 meta hash, 2 log list, 3 subscriber-count hash, 4 expiry zset, 5 stored counter
-- ARGV: 1 channel id
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last_id = redis.call('HGET', KEYS[1], 'last_id')
if not last_id then
  return nil
end
local removed = 0
local dropped = nil
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then
    redis.call('ZREM', KEYS[4], ARGV[1])
    break
  end
  local head_expires = tonumber(string.match(head, '^%d+ %d+ %d+ (%d+)'))
  if head_expires and head_expires <= now then
    dropped = redis.call('LPOP', KEYS[2])
    removed = removed + 1
  else
    break
  end
end
if removed > 0 then
  redis.call('DECRBY', KEYS[5], removed)
  local dt, dg = string.match(dropped, '^%d+ (%d+) (%d+)')
  redis.call('HSET', KEYS[1], 'dropped_time', dt, 'dropped_tag', dg)
end
return {tonumber(last_id), redis.call('LLEN', KEYS[2]), redis.call('HGETALL', KEYS[3])}
