-- The answer to one attempt of a manager webhook notification claimed by hook_claim.lua.
-- KEYS[1] nt:{p}:tasks:hooks  KEYS[2] nt:{p}:hook:<id>
-- ARGV[1] id  ARGV[2] the attempt claimed  ARGV[3] outcome: delivered | retry | drop
-- ARGV[4] retry delay (ms)  ARGV[5] HTTP status (0: none)  ARGV[6] error ("" when delivered)
-- ARGV[7] attempts at most  ARGV[8] how long a finished record is kept (s)
-- Returns {'ok', status} (pending, delivered, dropped or failed), or {'stale'} when the record
-- has moved on (its lease ran out and another attempt was claimed, or it is finished): the
-- answer changes nothing then.
local h = redis.call('HMGET', KEYS[2], 'attempts', 'status')
if h[2] ~= 'pending' or h[1] ~= ARGV[2] then
  return {'stale'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local status = 'pending'
if ARGV[3] == 'delivered' then
  status = 'delivered'
elseif ARGV[3] == 'drop' then
  status = 'dropped'
elseif tonumber(ARGV[2]) >= tonumber(ARGV[7]) then
  status = 'failed'
end
redis.call('HSET', KEYS[2], 'status', status, 'http', ARGV[5], 'error', ARGV[6])
if status == 'pending' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
else
  redis.call('HSET', KEYS[2], 'finished', now)
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[8]))
end
return {'ok', status}
