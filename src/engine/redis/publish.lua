-- Publishes one message to one channel, atomically: creates the channel if needed (within its
-- channel-count allowance), assigns id and (time, tag), stores and trims, renews the channel's
-- deadline and announces the message on the channel's pub/sub name. With an idempotency key the
-- channel already remembers, changes nothing and answers the channel as it is (replayed = 1).
-- KEYS: 1 meta hash, 2 log list, 3 channels zset (normal or wildcard), 4 expiry zset,
--       5 published counter, 6 stored counter, 7 subscriber-count hash, 8 idempotency-key zset
--       (key -> message id)
-- ARGV: 1 channel id, 2 record tail ("store eid_len ety_len " .. eid .. ety .. text), 3 store (0/1),
--       4 max stored (0: no limit), 5 message ttl ms, 6 inactivity ms, 7 allowance (-1: no limit),
--       8 pub/sub name, 9 count in published totals (0/1), 10 announce command (PUBLISH, or
--       SPUBLISH on a Redis Cluster), 11 idempotency key ('' for none), 12 keys remembered
-- Returns {id, time, tag, created, stored, subscriber counts, replayed, epoch}, or {-1} when refused.
local now, sec, usec = now_ms()
local epoch, created = ensure_channel(KEYS[1], KEYS[3], KEYS[8], tonumber(ARGV[7]), now)
if not epoch then
  return {-1}
end
local key = ARGV[11]
if key ~= '' and redis.call('ZSCORE', KEYS[8], key) then
  -- A replay keeps the channel alive like a publish (as on the memory engine), and changes nothing else.
  redis.call('ZADD', KEYS[3], 'GT', now + tonumber(ARGV[6]), ARGV[1])
  local seen = redis.call('HMGET', KEYS[1], 'last_id', 'time', 'tag')
  return {tonumber(seen[1]), tonumber(seen[2]), tonumber(seen[3]), created,
          redis.call('LLEN', KEYS[2]), redis.call('HGETALL', KEYS[7]), 1, tonumber(epoch)}
end
local last = redis.call('HMGET', KEYS[1], 'time', 'tag')
local last_time, last_tag = tonumber(last[1]), tonumber(last[2])
local time, tag = sec, usec
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
trim(KEYS[1], KEYS[2], KEYS[4], KEYS[6], ARGV[1], tonumber(ARGV[4]), now)
redis.call('ZADD', KEYS[3], 'GT', deadline, ARGV[1])
if key ~= '' then
  redis.call('ZADD', KEYS[8], id, key)
  local over = redis.call('ZCARD', KEYS[8]) - tonumber(ARGV[12])
  if over > 0 then
    redis.call('ZPOPMIN', KEYS[8], over)
  end
end
redis.call(ARGV[10], ARGV[8], 'm' .. epoch .. ' ' .. record)
return {id, time, tag, created, redis.call('LLEN', KEYS[2]), redis.call('HGETALL', KEYS[7]), 0,
        tonumber(epoch)}
