-- Prepares a channel for a node that starts or goes on following it: creates it if asked (within
-- its channel-count allowance), drops expired stored messages, renews its deadline, and returns its
-- incarnation (epoch), counters, the stored messages after a known id, the per-node subscriber
-- counts, and whether history of the channel was lost before this incarnation.
-- A node that followed incarnation `known` which is gone: when a delete removed it (the removal mark
-- `KEYS[8]` names an incarnation at least as new), returns {2, text}; otherwise Redis lost it
-- (restarted without its data, evicted it): the channel goes on, created again if no publish did,
-- and is marked 'lost' so that every node knows its history before is gone.
-- KEYS: 1 meta hash, 2 log list, 3 channels zset, 4 expiry zset, 5 stored counter, 6 subscriber-count hash,
--       7 idempotency-key zset, 8 removal mark
-- ARGV: 1 channel id, 2 create (0/1), 3 allowance (-1: no limit), 4 inactivity ms,
--       5 known epoch ('' if none), 6 known last id
-- Returns {-1} refused by the limit, {0} missing, {2, text} deleted, or
-- {1, created, epoch, last id, dropped time, dropped tag, stored count, records, subscriber counts, lost}.
local now = now_ms()
local known = ARGV[5]
local epoch, created = redis.call('HGET', KEYS[1], 'epoch'), 0
if known ~= '' and epoch ~= known then
  local mark = redis.call('GET', KEYS[8])
  if mark then
    local removed, text = string.match(mark, '^(%d+) d(.*)$')
    if removed and tonumber(removed) >= tonumber(known) then
      return {2, text}
    end
  end
  epoch, created = ensure_channel(KEYS[1], KEYS[3], KEYS[7], tonumber(ARGV[3]), now)
  if not epoch then
    return {-1}
  end
  redis.call('HSET', KEYS[1], 'lost', 1)
elseif not epoch then
  if ARGV[2] ~= '1' then
    return {0}
  end
  epoch, created = ensure_channel(KEYS[1], KEYS[3], KEYS[7], tonumber(ARGV[3]), now)
  if not epoch then
    return {-1}
  end
end
trim(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ARGV[1], 0, now)
redis.call('ZADD', KEYS[3], 'GT', now + tonumber(ARGV[4]), ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'last_id', 'dropped_time', 'dropped_tag', 'lost')
local records = redis.call('LRANGE', KEYS[2], 0, -1)
local after = -1
if known == epoch then
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
  redis.call('HGETALL', KEYS[6]), meta[4] or 0}
