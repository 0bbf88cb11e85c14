-- Complete a call task with the rep's outcome and, in the same step, post the outcome event that
-- moves the lead's run (type "outcome": plan, node, visit, outcome, detail) and a
-- "call.completed" event for the timeline and for plans that wait for it.
-- KEYS[1] nt:{p}:task:<id>  KEYS[2] nt:{p}:tasks:open  KEYS[3] the set holding it
-- KEYS[4] nt:{p}:tasks:sla  KEYS[5] nt:{p}:events
-- ARGV[1] id  ARGV[2] expected owner  ARGV[3] outcome  ARGV[4] note  ARGV[5] now (ms)
-- ARGV[6] who completed it
-- Returns {"ok", owner}, {"missing"}, {"done", outcome} or {"moved"}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local v = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lead', 'plan', 'node', 'visit',
                     'outcome')
if v[1] == 'done' then
  return {'done', v[7] or ''}
end
local owner = v[2] or ''
if owner ~= ARGV[2] then
  return {'moved'}
end
redis.call('HSET', KEYS[1], 'status', 'done', 'outcome', ARGV[3], 'note', ARGV[4],
           'done', ARGV[5], 'done_by', ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'l', v[3], 't', 'outcome', 'm', '0', 'at', ARGV[5],
           'plan', v[4], 'node', v[5], 'visit', v[6], 'outcome', ARGV[3], 'detail', ARGV[4])
redis.call('XADD', KEYS[5], '*', 'l', v[3], 't', 'call.completed', 'm', '0', 'at', ARGV[5],
           'task', ARGV[1], 'outcome', ARGV[3], 'rep', ARGV[6], 'plan', v[4], 'node', v[5])
return {'ok', owner}
