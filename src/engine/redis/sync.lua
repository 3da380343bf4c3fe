-- Prepares a channel for a node that starts following it: creates it if asked (within its
-- channel-count allowance), drops expired stored messages, renews its deadline, and returns its
-- incarnation (epoch), counters, the stored messages after a known id, and the per-node subscriber
-- counts.
-- KEYS: 1 meta hash, 2 log list, 3 channels zset, 4 expiry zset, 5 stored counter, 6 subscriber-count hash
-- ARGV: 1 channel id, 2 create (0/1), 3 allowance (-1: no limit), 4 inactivity ms,
--       5 known epoch ('' if none), 6 known last id
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local created = 0
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[2] ~= '1' then
    return {0}
  end
  local allowance = tonumber(ARGV[3])
  if allowance >= 0 and redis.call('ZCARD', KEYS[3]) >= allowance then
    return {-1}
  end
  epoch = tostring(now)
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last_id', 0, 'time', 0, 'tag', 0)
  created = 1
end
local removed = 0
local dropped = nil
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then break end
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
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
end
redis.call('ZADD', KEYS[3], 'GT', now + tonumber(ARGV[4]), ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'last_id', 'dropped_time', 'dropped_tag')
local records = redis.call('LRANGE', KEYS[2], 0, -1)
local after = -1
if ARGV[5] == epoch then
  after = tonumber(ARGV[6])
end
local newer = {}
for _, record in ipairs(records) do
  if tonumber(string.match(record, '^(%d+) ')) > after then
    newer[#newer + 1] = record
  end
end
return {1, created, epoch, meta[1], meta[2] or '', meta[3] or '', #records, newer,
  redis.call('HGETALL', KEYS[6])}
