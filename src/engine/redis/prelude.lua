-- Shared by every Herald script (the Rust side prepends this file to each one):
-- the time, trimming a channel's stored records, creating and removing a channel.

-- Redis time: milliseconds, then the seconds and microseconds it is made of.
local function now_ms()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec * 1000 + math.floor(usec / 1000), sec, usec
end

-- Drops stored records beyond `max` (0: no limit) and those expired at `now` (or unreadable) from
-- the head of `log`; counts them off `stored`, notes the (time, tag) of the newest one dropped in
-- `meta`, and keeps the channel's score in `expiry` at its oldest record's expiry. Returns how many
-- went.
local function trim(meta, log, expiry, stored, id, max, now)
  local removed, last = 0, nil
  if max > 0 then
    local over = redis.call('LLEN', log) - max
    while over > 0 do
      last = redis.call('LPOP', log)
      removed = removed + 1
      over = over - 1
    end
  end
  while true do
    local head = redis.call('LINDEX', log, 0)
    if not head then
      redis.call('ZREM', expiry, id)
      break
    end
    local expires = tonumber(string.match(head, '^%d+ %d+ %d+ (%d+)'))
    if expires and expires > now then
      redis.call('ZADD', expiry, expires, id)
      break
    end
    last = redis.call('LPOP', log)
    removed = removed + 1
  end
  if removed > 0 then
    redis.call('DECRBY', stored, removed)
    local dt, dg = string.match(last, '^%d+ (%d+) (%d+)')
    if dt and redis.call('EXISTS', meta) == 1 then
      redis.call('HSET', meta, 'dropped_time', dt, 'dropped_tag', dg)
    end
  end
  return removed
end

-- The channel's epoch, creating the channel when it does not exist, unless `channels` already holds
-- `allowance` channels (-1: no limit). Idempotency keys left by an earlier channel of the same id
-- (its meta hash went, e.g. evicted) are dropped with the creation: they are not this channel's.
-- Returns epoch (nil when refused) and 1 if it was created.
local function ensure_channel(meta, channels, keys, allowance, now)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch, 0
  end
  if allowance >= 0 and redis.call('ZCARD', channels) >= allowance then
    return nil, 0
  end
  epoch = tostring(now)
  redis.call('HSET', meta, 'epoch', epoch, 'last_id', 0, 'time', 0, 'tag', 0)
  redis.call('DEL', keys)
  return epoch, 1
end

-- Removes a channel: its counters, stored records, subscriber counts and idempotency keys.
local function remove_channel(meta, log, subs, channels, expiry, stored, id, keys)
  redis.call('DECRBY', stored, redis.call('LLEN', log))
  redis.call('DEL', meta, log, subs, keys)
  redis.call('ZREM', channels, id)
  redis.call('ZREM', expiry, id)
end

