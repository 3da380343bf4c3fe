-- Creates a channel if it does not exist, within its channel-count allowance, and renews its
-- deadline. Returns 1 if created, 0 if it existed, -1 if the limit refused it. (A publish to several
-- channels creates them all first, so a refused one leaves the others unchanged.)
-- KEYS: 1 meta hash, 2 channels zset
-- ARGV: 1 channel id, 2 allowance (-1: no limit), 3 inactivity ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local allowance = tonumber(ARGV[2])
if allowance >= 0 and redis.call('ZCARD', KEYS[2]) >= allowance then
  return -1
end
redis.call('HSET', KEYS[1], 'epoch', tostring(now), 'last_id', 0, 'time', 0, 'tag', 0)
redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[3]), ARGV[1])
return 1
