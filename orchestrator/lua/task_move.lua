-- Claim, reassign or escalate a call task, if it is still where the caller saw it.
-- KEYS[1] nt:{p}:task:<id>  KEYS[2] the set holding it now  KEYS[3] the set to hold it
-- KEYS[4] nt:{p}:tasks:sla
-- ARGV[1] id  ARGV[2] op: claim | reassign | escalate  ARGV[3] expected owner ("" = the queue)
-- ARGV[4] new owner ("" = the team queue)  ARGV[5] now (ms)
-- Returns {"ok", old owner}, {"missing"}, {"done"}, {"moved"} (owner changed meanwhile) or
-- {"already"} (escalated before).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local v = redis.call('HMGET', KEYS[1], 'status', 'owner', 'due', 'escalated')
if v[1] == 'done' then
  return {'done'}
end
local owner = v[2] or ''
if owner ~= ARGV[3] then
  return {'moved'}
end
local op = ARGV[2]
if op == 'escalate' then
  if v[4] and v[4] ~= '' then
    return {'already'}
  end
  redis.call('HSET', KEYS[1], 'owner', '', 'status', 'open', 'escalated', ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[1])
elseif op == 'claim' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'status', 'claimed', 'claimed', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'status', 'open', 'reassigned', ARGV[5])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], v[3] or '0', ARGV[1])
return {'ok', owner}
