-- Removes a channel whose deadline passed (no publish, no stored message and no subscriber renewed
-- it within the inactivity time). Nodes that mirror it hear 'x' on its pub/sub name. Returns 1 if
-- this call removed it.
-- KEYS: 1 meta hash, 2 log list, 3 channels zset, 4 expiry zset, 5 stored counter, 6 subscriber-count hash,
--       7 idempotency-key zset
-- ARGV: 1 channel id, 2 pub/sub name, 3 announce command (PUBLISH/SPUBLISH)
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not deadline or tonumber(deadline) > now_ms() then
  return 0
end
remove_channel(KEYS[1], KEYS[2], KEYS[6], KEYS[3], KEYS[4], KEYS[5], ARGV[1], KEYS[7])
redis.call(ARGV[3], ARGV[2], 'x')
return 1
