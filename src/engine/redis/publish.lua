-- Publishes one message to one channel, atomically: creates the channel if needed (within its
-- channel-count allowance), assigns id and (time, tag), stores and trims, renews the channel's
-- deadline and announces the message on the channel's pub/sub name.
-- KEYS: 1 meta hash, 2 log list, 3 channels zset (normal or wildcard), 4 expiry zset,
--       5 published counter, 6 stored counter, 7 subscriber-count hash
-- ARGV: 1 channel id, 2 record tail ("store eid_len ety_len " .. eid .. ety .. text), 3 store (0/1),
--       4 max stored (0: no limit), 5 message ttl ms, 6 inactivity ms, 7 allowance (-1: no limit),
--       8 pub/sub name, 9 count in published totals (0/1), 10 announce command (PUBLISH, or
--       SPUBLISH on a Redis Cluster)
local t = redis.call('TIME')
local sec = tonumber(t[1])
local usec = tonumber(t[2])
local now = sec * 1000 + math.floor(usec / 1000)
local created = 0
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  local allowance = tonumber(ARGV[7])
  if allowance >= 0 and redis.call('ZCARD', KEYS[3]) >= allowance then
    return {-1}
  end
  epoch = tostring(now)
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last_id', 0, 'time', 0, 'tag', 0)
  created = 1
end
local last_time = tonumber(redis.call('HGET', KEYS[1], 'time'))
local last_tag = tonumber(redis.call('HGET', KEYS[1], 'tag'))
local time = sec
local tag = usec
if sec <= last_time then
  time = last_time
  tag = math.max(last_tag + 1, usec)
end
local id = redis.call('HINCRBY', KEYS[1], 'last_id', 1)
redis.call('HSET', KEYS[1], 'time', time, 'tag', tag)
if ARGV[9] == '1' then
  redis.call('INCR', KEYS[5])
end
local expires = now + tonumber(ARGV[5])
local record = id .. ' ' .. time .. ' ' .. tag .. ' ' .. expires .. ' ' .. ARGV[2]
local deadline = now + tonumber(ARGV[6])
if ARGV[3] == '1' then
  redis.call('RPUSH', KEYS[2], record)
  redis.call('INCR', KEYS[6])
  deadline = expires + tonumber(ARGV[6])
end
-- Trim by count, then by age.
local removed = 0
local dropped = nil
local max = tonumber(ARGV[4])
if max > 0 then
  local over = redis.call('LLEN', KEYS[2]) - max
  while over > 0 do
    dropped = redis.call('LPOP', KEYS[2])
    removed = removed + 1
    over = over - 1
  end
end
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then break end
  local head_expires = tonumber(string.match(head, '^%d+ %d+ %d+ (%d+)'))
  if head_expires and head_expires <= now then
    dropped = redis.call('LPOP', KEYS[2])
    removed = removed + 1
  else
    redis.call('ZADD', KEYS[4], head_expires, ARGV[1])
    break
  end
end
if removed > 0 then
  redis.call('DECRBY', KEYS[6], removed)
  local dt, dg = string.match(dropped, '^%d+ (%d+) (%d+)')
  redis.call('HSET', KEYS[1], 'dropped_time', dt, 'dropped_tag', dg)
end
local stored = redis.call('LLEN', KEYS[2])
if stored == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
end
redis.call('ZADD', KEYS[3], 'GT', deadline, ARGV[1])
redis.call(ARGV[10], ARGV[8], 'm' .. epoch .. ' ' .. record)
return {id, time, tag, created, stored, redis.call('HGETALL', KEYS[7])}
