-- One channel's counters for statistics: nil if it does not exist, else
-- {last id, stored messages, subscriber-count hash}. Drops expired stored messages first, so the
-- counts agree with what a subscriber would get.
-- KEYS: 1 meta hash, 2 log list, 3 subscriber-count hash, 4 expiry zset, 5 stored counter
-- ARGV: 1 channel id
local last_id = redis.call('HGET', KEYS[1], 'last_id')
if not last_id then
  return nil
end
trim(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ARGV[1], 0, now_ms())
return {tonumber(last_id), redis.call('LLEN', KEYS[2]), redis.call('HGETALL', KEYS[3])}
