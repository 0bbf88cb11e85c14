-- Claim, reassign or escalate a call task, if it is still where the caller saw it and the lead's
-- run still waits at the task's send (else the task expires: see task_list.lua).
-- KEYS[1] nt:{p}:task:<id>  KEYS[2] the set holding it now  KEYS[3] the set to hold it
-- KEYS[4] nt:{p}:tasks:sla
-- ARGV[1] id  ARGV[2] op: claim | reassign | escalate  ARGV[3] expected owner ("" = the queue)
-- ARGV[4] new owner ("" = the team queue)  ARGV[5] now (ms)
-- Escalating with a manager webhook configured also gives KEYS[5] nt:{p}:hook:<escalation id>
-- KEYS[6] nt:{p}:tasks:hooks  ARGV[6] escalation id  ARGV[7] the webhook's body: the notification is
-- recorded pending (due at once) in this same step, so that no escalation goes unannounced
-- when nurtured dies before its POST (tasks.c delivers it: hook_claim.lua, hook_done.lua).
-- Returns {"ok", old owner}, {"missing"}, {"done"}, {"moved"} (owner changed meanwhile),
-- {"already"} (escalated before) or {"expired", owner whose count to lower ("": expired
-- before), why}.
-- The run hash nt:{p}:run:<lead>:<plan> is in the task's slot (same {p}).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local v = redis.call('HMGET', KEYS[1], 'status', 'owner', 'due', 'escalated', 'lead', 'plan',
                     'node', 'visit', 'team', 'expired_why')
if v[1] == 'done' then
  return {'done'}
end
if v[1] == 'expired' then
  return {'expired', '', v[10] or ''}
end
local pre = string.match(KEYS[1], '^(.-}:)task:')
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
local function expire(id, owner, team, why, now)
  redis.call('HSET', KEYS[1], 'status', 'expired', 'expired', now, 'expired_why', why)
  redis.call('ZREM', pre .. 'tasks:open', id)
  redis.call('ZREM', pre .. 'tasks:sla', id)
  if owner ~= '' then
    redis.call('ZREM', pre .. 'tasks:rep:' .. owner, id)
  end
  redis.call('ZREM', pre .. 'tasks:team:' .. (team ~= '' and team or 'sales'), id)
end
local owner = v[2] or ''
local why = moved_on(v[5], v[6], v[7], v[8])
if why then
  expire(ARGV[1], owner, v[9] or '', why, ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'expired', owner, why}
end
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
  if KEYS[6] and ARGV[6] and ARGV[6] ~= '' then
    redis.call('HSET', KEYS[5], 'task', ARGV[1], 'body', ARGV[7], 'status', 'pending',
               'attempts', 0, 'created', ARGV[5])
    redis.call('ZADD', KEYS[6], 0, ARGV[6])
    redis.call('HSET', KEYS[1], 'escalation', ARGV[6])
  end
elseif op == 'claim' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'status', 'claimed', 'claimed', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'status', 'open', 'reassigned', ARGV[5])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], v[3] or '0', ARGV[1])
return {'ok', owner}
