-- Creates a channel if it does not exist, within its channel-count allowance, and gives it a
-- deadline. Returns 1 if created, 0 if it existed, -1 if the limit refused it. (A publish to several
-- channels creates them all first, so a refused one leaves the others unchanged.)
-- KEYS: 1 meta hash, 2 channels zset, 3 idempotency-key zset
-- ARGV: 1 channel id, 2 allowance (-1: no limit), 3 inactivity ms
local now = now_ms()
local epoch, created = ensure_channel(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]), now)
if not epoch then
  return -1
end
if created == 1 then
  redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[3]), ARGV[1])
end
return created
