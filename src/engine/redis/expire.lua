-- Drops a channel's expired stored messages (the sweeper, for channels whose oldest stored message
-- is due). Returns how many went.
-- KEYS: 1 meta hash, 2 log list, 3 expiry zset, 4 stored counter
-- ARGV: 1 channel id
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = 0
local dropped = nil
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then
    redis.call('ZREM', KEYS[3], ARGV[1])
    break
  end
  local head_expires = tonumber(string.match(head, '^%d+ %d+ %d+ (%d+)'))
  if head_expires and head_expires <= now then
    dropped = redis.call('LPOP', KEYS[2])
    removed = removed + 1
  else
    redis.call('ZADD', KEYS[3], head_expires, ARGV[1])
    break
  end
end
if removed > 0 then
  redis.call('DECRBY', KEYS[4], removed)
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local dt, dg = string.match(dropped, '^%d+ (%d+) (%d+)')
    redis.call('HSET', KEYS[1], 'dropped_time', dt, 'dropped_tag', dg)
  end
end
return removed
