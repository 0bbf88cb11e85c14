-- Create a call task once per message id (the channel may dispatch a message twice).
-- KEYS[1] nt:{p}:task:<id>  KEYS[2] nt:{p}:tasks:open  KEYS[3] the holder: nt:{p}:tasks:rep:<rep>
-- or nt:{p}:tasks:team:<team>  KEYS[4] nt:{p}:tasks:sla
-- ARGV[1] id  ARGV[2] due (ms)  ARGV[3] SLA deadline (ms, 0: none)  ARGV[4..] field, value pairs
-- Returns {"created"} or {"exists", owner, team}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local v = redis.call('HMGET', KEYS[1], 'owner', 'team')
  return {'exists', v[1] or '', v[2] or ''}
end
local f = {}
for i = 4, #ARGV do
  f[#f + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(f))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
end
return {'created'}
