-- List a partition's part of a task list, expiring on the way every task whose lead's run has
-- left the task's send (timed out, went on, or ended by a goal): the run hash
-- nt:{p}:run:<lead>:<plan> no longer has n = the task's node and vi = its visit with s = a (a
-- send's message carries the visit counter after entering the node, which is the run's vi while
-- it rests there). An expired task keeps its hash (status "expired", expired, expired_why) and
-- leaves the open, SLA, rep and team sets; completing it later is refused (task_complete.lua).
-- KEYS[1] the set listed: nt:{p}:tasks:open, nt:{p}:tasks:rep:<rep> or nt:{p}:tasks:team:<team>
-- ARGV[1] at most this many tasks  ARGV[2] now (ms)  ARGV[3] (the sweep, tasks.c) a rank
-- Returns {{id, {field, value, ...}}, ...} (open and claimed, by due time) and {owner, ...}: the
-- holders of the tasks expired here (each one's open count to lower; "" for the queue).
-- With ARGV[3] the script is the periodic sweep that expires tasks nobody lists: it looks at
-- ARGV[1] tasks from that rank on and returns {{}, {owner, ...}, the rank to go on from (0: the
-- end was reached)}.
-- Every key is in the slot of KEYS[1] ({p}).
local limit, now = tonumber(ARGV[1]), ARGV[2]
local sweep = ARGV[3] ~= nil
local pre = string.match(KEYS[1], '^(.-}:)tasks:')
local out, gone = {}, {}
local seen = 0

local function moved_on(f)
  local plan = f.plan or ''
  local r = redis.call('HMGET', pre .. 'run:' .. (f.lead or '') .. ':' .. plan, 'n', 'vi', 's',
                       'x')
  if not r[3] then
    return 'the lead has no run in ' .. plan .. ' any more'
  end
  if r[3] ~= 'a' then
    return 'the lead\'s run in ' .. plan .. ' ended (' .. (r[4] or 'done') .. ')'
  end
  if r[1] ~= f.node then
    return 'the lead\'s run in ' .. plan .. ' moved on from ' .. (f.node or '?') .. ' to ' ..
           (r[1] or '?')
  end
  if r[2] ~= f.visit then
    return 'the lead\'s run in ' .. plan .. ' is at a later visit of ' .. f.node
  end
  return nil
end

local off = sweep and tonumber(ARGV[3]) or 0
local at_end = false
while not at_end and (sweep and seen or #out) < limit do
  local want = limit - (sweep and seen or #out)
  local ids = redis.call('ZRANGE', KEYS[1], off, off + want - 1)
  at_end = #ids < want
  for _, id in ipairs(ids) do
    seen = seen + 1
    local tk = pre .. 'task:' .. id
    local h = redis.call('HGETALL', tk)
    local f = {}
    for i = 1, #h, 2 do
      f[h[i]] = h[i + 1]
    end
    local why = nil
    if f.status == 'open' or f.status == 'claimed' then
      why = moved_on(f)
    end
    if why then
      local owner, team = f.owner or '', f.team or ''
      redis.call('HSET', tk, 'status', 'expired', 'expired', now, 'expired_why', why)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', pre .. 'tasks:open', id)
      redis.call('ZREM', pre .. 'tasks:sla', id)
      if owner ~= '' then
        redis.call('ZREM', pre .. 'tasks:rep:' .. owner, id)
      end
      redis.call('ZREM', pre .. 'tasks:team:' .. (team ~= '' and team or 'sales'), id)
      gone[#gone + 1] = owner
    else
      off = off + 1
      if not sweep and (f.status == 'open' or f.status == 'claimed') then
        out[#out + 1] = {id, h}
      end
    end
  end
end
if sweep then
  return {out, gone, at_end and 0 or off}
end
return {out, gone}
