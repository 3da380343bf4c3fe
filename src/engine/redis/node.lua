-- A node's heartbeat: records its report and when Redis saw it, forgets nodes silent for ten node
-- timeouts, and returns {reports of nodes seen within one node timeout (key, report, ...), keys of
-- the nodes it forgot, 1 if Redis did not know the calling node (new, forgotten, or data lost)}.
-- KEYS: 1 node-report hash, 2 node-seen hash
-- ARGV: 1 node key, 2 report (JSON), 3 node timeout ms, 4 remove (1: the node is leaving)
local now = now_ms()
local unknown = 0
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  unknown = 1
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], now)
end
local timeout = tonumber(ARGV[3])
local live = {}
local forgotten = {}
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  local age = now - tonumber(seen[i + 1])
  if age > 10 * timeout then
    redis.call('HDEL', KEYS[1], seen[i])
    redis.call('HDEL', KEYS[2], seen[i])
    forgotten[#forgotten + 1] = seen[i]
  elseif age <= timeout then
    local report = redis.call('HGET', KEYS[1], seen[i])
    if report then
      live[#live + 1] = seen[i]
      live[#live + 1] = report
    end
  end
end
return {live, forgotten, unknown}
