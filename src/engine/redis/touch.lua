-- Renews the deadline of channels that have subscribers on the calling node.
-- KEYS: 1 channels zset, 2 wildcard channels zset
-- ARGV: 1 keep-alive ms, then pairs (kind 'n' or 'w', channel id)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local key = KEYS[1]
  if ARGV[i] == 'w' then key = KEYS[2] end
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, 'GT', deadline, ARGV[i + 1])
  end
end
return #ARGV
