-- Drops a channel's expired stored messages (the sweeper, for channels whose oldest stored message
-- is due). Returns how many went.
-- KEYS: 1 meta hash, 2 log list, 3 expiry zset, 4 stored counter
-- ARGV: 1 channel id
return trim(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 0, now_ms())
