-- Complete a call task with the rep's outcome and, in the same step, post the outcome event that
-- moves the lead's run (type "outcome": plan, node, visit, outcome, detail) and a
-- "call.completed" event for the timeline and for plans that wait for it. A task whose run has
-- left its send meanwhile (timed out, went on, ended by a goal) expires instead and posts
-- nothing: its outcome would be for a visit that is over (see task_list.lua).
-- KEYS[1] nt:{p}:task:<id>  KEYS[2] nt:{p}:tasks:open  KEYS[3] the set holding it
-- KEYS[4] nt:{p}:tasks:sla  KEYS[5] nt:{p}:events
-- ARGV[1] id  ARGV[2] expected owner  ARGV[3] outcome  ARGV[4] note  ARGV[5] now (ms)
-- ARGV[6] who completed it
-- Returns {"ok", owner}, {"missing"}, {"done", outcome}, {"moved"} or {"expired", owner whose
-- count to lower ("": expired before), why}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local v = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lead', 'plan', 'node', 'visit',
                     'outcome', 'team', 'expired_why')
if v[1] == 'done' then
  return {'done', v[7] or ''}
end
if v[1] == 'expired' then
  return {'expired', '', v[9] or ''}
end
local pre = string.match(KEYS[1], '^(.-}:)task:')
local owner = v[2] or ''
-- Why the task no longer applies (the run left its send, or ended), or nil.
local function moved_on(lead, plan, node, visit)
  local r = redis.call('HMGET', pre .. 'run:' .. (lead or '') .. ':' .. (plan or ''), 'n', 'vi',
                       's', 'x')
  if not r[3] then
    return 'the lead has no run in ' .. (plan or '?') .. ' any more'
  end
  if r[3] ~= 'a' then
    return 'the lead\'s run in ' .. plan .. ' ended (' .. (r[4] or 'done') .. ')'
  end
  if r[1] ~= node then
    return 'the lead\'s run in ' .. plan .. ' moved on from ' .. (node or '?') .. ' to ' ..
           (r[1] or '?')
  end
  if r[2] ~= visit then
    return 'the lead\'s run in ' .. plan .. ' is at a later visit of ' .. node
  end
  return nil
end
local why = moved_on(v[3], v[4], v[5], v[6])
if why then
  local team = v[8] or ''
  redis.call('HSET', KEYS[1], 'status', 'expired', 'expired', ARGV[5], 'expired_why', why)
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  if owner ~= '' then
    redis.call('ZREM', pre .. 'tasks:rep:' .. owner, ARGV[1])
  end
  redis.call('ZREM', pre .. 'tasks:team:' .. (team ~= '' and team or 'sales'), ARGV[1])
  return {'expired', owner, why}
end
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
