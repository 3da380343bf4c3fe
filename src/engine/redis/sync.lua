-- Prepares a channel for a node that starts following it: creates it if asked (within its
-- channel-count allowance), drops expired stored messages, renews its deadline, and returns its
-- incarnation (epoch), counters, the stored messages after a known id, and the per-node subscriber
-- counts.
-- KEYS: 1 meta hash, 2 log list, 3 channels zset, 4 expiry zset, 5 stored counter, 6 subscriber-count hash,
--       7 idempotency-key zset
-- ARGV: 1 channel id, 2 create (0/1), 3 allowance (-1: no limit), 4 inactivity ms,
--       5 known epoch ('' if none), 6 known last id
local now = now_ms()
local epoch, created
if ARGV[2] == '1' then
  epoch, created = ensure_channel(KEYS[1], KEYS[3], KEYS[7], tonumber(ARGV[3]), now)
  if not epoch then
    return {-1}
  end
else
  epoch, created = redis.call('HGET', KEYS[1], 'epoch'), 0
  if not epoch then
    return {0}
  end
end
trim(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ARGV[1], 0, now)
redis.call('ZADD', KEYS[3], 'GT', now + tonumber(ARGV[4]), ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'last_id', 'dropped_time', 'dropped_tag')
local records = redis.call('LRANGE', KEYS[2], 0, -1)
local after = -1
if ARGV[5] == epoch then
  after = tonumber(ARGV[6])
end
local newer = {}
for _, record in ipairs(records) do
  local id = tonumber(string.match(record, '^(%d+) '))
  if id and id > after then
    newer[#newer + 1] = record
  end
end
return {1, created, epoch, meta[1], meta[2] or '', meta[3] or '', #records, newer,
  redis.call('HGETALL', KEYS[6])}
