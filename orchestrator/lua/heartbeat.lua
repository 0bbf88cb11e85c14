-- Worker heartbeat: records this worker as alive and returns the live workers.
-- KEYS[1] nt:workers (zset: worker id -> last heartbeat, Redis server ms)
-- ARGV[1] worker id  ARGV[2] ms after which a silent worker counts as dead  ARGV[3] "leave" to
-- remove this worker (at shutdown)
-- Returns the ids of the live workers (sorted by the caller). Server time keeps workers with
-- skewed clocks in agreement.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
