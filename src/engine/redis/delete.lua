-- Deletes a channel: its counters, stored messages and subscriber counts go, nodes following it
-- hear 'd' .. text (the channel-deleted message) on its pub/sub name, and a removal mark
-- "{epoch} d{text}" stays for a while, so that a node cut off meanwhile learns on its catch-up
-- (sync.lua) that this incarnation was deleted, not lost.
-- KEYS: 1 meta hash, 2 log list, 3 channels zset, 4 expiry zset, 5 stored counter, 6 subscriber-count hash,
--       7 idempotency-key zset, 8 removal mark
-- ARGV: 1 channel id, 2 pub/sub name, 3 channel-deleted text, 4 announce command (PUBLISH/SPUBLISH),
--       5 how long the removal mark stays (ms)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return 0
end
remove_channel(KEYS[1], KEYS[2], KEYS[6], KEYS[3], KEYS[4], KEYS[5], ARGV[1], KEYS[7])
redis.call('SET', KEYS[8], epoch .. ' d' .. ARGV[3], 'PX', ARGV[5])
redis.call(ARGV[4], ARGV[2], 'd' .. ARGV[3])
return 1
