-- Claim the manager webhook notifications of a partition that are due (tasks.c): each one
-- claimed is hidden for a lease (its due time moved to now + lease) and its attempt counted
-- before the POST, so that of several nurtured processes on one Redis only one delivers it, a
-- process that dies mid-POST leaves it to be claimed again when the lease is over, and no
-- notification is tried more than the configured number of times.
-- KEYS[1] nt:{p}:tasks:hooks (zset: escalation id -> due, ms on the Redis server's clock)
-- ARGV[1] how many at most  ARGV[2] lease (ms)  ARGV[3] attempts at most
-- ARGV[4] how long a finished record is kept (s)
-- Returns {{id, body, attempt}, ...}. A record past its attempts becomes 'failed' here.
-- The records nt:{p}:hook:<id> are in the same slot (same {p}).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pre = string.match(KEYS[1], '^(.-}:)tasks:hooks$')
local max = tonumber(ARGV[3])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local k = pre .. 'hook:' .. id
  local h = redis.call('HMGET', k, 'body', 'attempts', 'status')
  local n = tonumber(h[2] or '0') or 0
  if not h[1] or h[3] ~= 'pending' then
    redis.call('ZREM', KEYS[1], id)
  elseif n >= max then
    -- every attempt was claimed and none answered (the process died each time)
    redis.call('HSET', k, 'status', 'failed', 'finished', now)
    redis.call('ZREM', KEYS[1], id)
    redis.call('EXPIRE', k, tonumber(ARGV[4]))
  else
    n = n + 1
    redis.call('HSET', k, 'attempts', n, 'last', now)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    out[#out + 1] = {id, h[1], n}
  end
end
return out
