-- Renews the deadline of channels that have subscribers on the calling node.
-- KEYS: 1 channels zset, 2 wildcard channels zset
-- ARGV: 1 keep-alive ms, then pairs (kind 'n' or 'w', channel id)
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local key = KEYS[1]
  if ARGV[i] == 'w' then key = KEYS[2] end
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, 'GT', deadline, ARGV[i + 1])
  end
end
return #ARGV
