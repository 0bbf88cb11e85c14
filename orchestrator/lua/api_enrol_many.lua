-- Bulk enrolment (POST /v1/plans/{id}/enrol) of up to a few hundred leads of ONE partition, in
-- request order: each lead is created or updated (as lead_put.lua "upsert"), then enrolled by
-- the rules of enrol.lua, all in one script call instead of two per lead.
-- KEYS[1] nt:{p}:timers  KEYS[2] nt:{p}:stats:<plan>  KEYS[3] nt:{p}:events
-- ARGV[1] key prefix "nt:{p}:"  ARGV[2] plan id  ARGV[3] version  ARGV[4] now (ms, plan clock)
-- ARGV[5] now (ms, real clock)  ARGV[6] "1" when the re-entry policy is AFTER_EXIT
-- ARGV[7] re-entry cooldown (ms)  ARGV[8] unused (the run's first step writes the timeline
--   line "enrolled in <plan> v<ver>")
-- ARGV[9..] per lead: id, then c = 2 * <number of field, value pairs> + <1 when the entry
--   filter (evaluated by the caller) lets it in, else 0>, then the pairs.
-- Lead and run keys are built from the prefix (architecture.md, "Keys read inside
-- scripts"): they carry the hash tag of the declared keys.
-- Returns {statuses, events posted}: statuses has one word per lead, space-separated, in
-- order: "o" enrolled, "u" upserted only (the caller's entry filter said no), "c" conflict
-- (active in the plan), "n" done and re-entry never, "w<ms>" re-entry cooldown with ms to go.
local pre, plan, ver, now, nowr = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local after_exit, cooldown = ARGV[6] == '1', tonumber(ARGV[7])
local rfield = 'r:' .. plan
local member_tail = '|' .. plan
local st, timers = {}, {}
local enrolled, posted = 0, 0
local i, nargs = 9, #ARGV
while i <= nargs do
  local id = ARGV[i]
  local c = tonumber(ARGV[i + 1])
  local eligible = c % 2 == 1
  local f1, f2 = i + 2, i + 1 + c - c % 2
  i = f2 + 1
  local lk = pre .. 'lead:' .. id
  local all = redis.call('HGETALL', lk)
  local exists = #all > 0
  local mark, active = nil, false
  for j = 1, #all, 2 do
    local k = all[j]
    if string.byte(k, 1) == 114 and string.byte(k, 2) == 58 then -- 'r:'
      if k == rfield then
        mark = all[j + 1]
      end
      if all[j + 1] == 'a' then
        active = true
      end
    end
  end
  -- a lead with active runs posts lead.updated, so goals and branches see the change
  if active and f2 >= f1 then
    local ev = {'l', id, 't', 'lead.updated', 'm', '0', 'at', now}
    for j = f1, f2, 2 do
      local name = ARGV[j]
      if name == '_score' then name = 'score' elseif name == '_stage' then name = 'stage' end
      ev[#ev + 1] = name
      ev[#ev + 1] = ARGV[j + 1]
    end
    redis.call('XADD', KEYS[3], '*', unpack(ev))
    posted = posted + 1
  end
  -- enrolment: the run hash exists only where the lead has its r:<plan> mark (both are written
  -- together by enrol and apply), so a lead without the mark needs no run read
  local s = 'u'
  local t, vi = 1, 0
  local rk
  if eligible then
    s = 'o'
    if mark then
      rk = pre .. 'run:' .. id .. ':' .. plan
      local run = redis.call('HMGET', rk, 's', 't', 'vi', 'xt')
      if run[1] == 'a' or (not run[1] and mark == 'a') then
        s = 'c'
      elseif not after_exit then
        s = 'n'
      else
        local left = (tonumber(run[4]) or 0) + cooldown - tonumber(now)
        if left > 0 then
          s = string.format('w%d', left)
        else
          t = (tonumber(run[2]) or 0) + 1
          vi = tonumber(run[3]) or 0
          redis.call('DEL', rk)
        end
      end
    else
      rk = pre .. 'run:' .. id .. ':' .. plan
    end
  end
  -- the lead: its fields, _created when new, the run mark when enrolled; one HSET
  if s == 'o' then
    if exists then
      redis.call('HSET', lk, rfield, 'a', unpack(ARGV, f1, f2))
    else
      redis.call('HSET', lk, '_created', now, rfield, 'a', unpack(ARGV, f1, f2))
    end
  elseif not exists then
    redis.call('HSET', lk, '_created', now, unpack(ARGV, f1, f2))
  elseif f2 >= f1 then
    redis.call('HSET', lk, unpack(ARGV, f1, f2))
  end
  if s == 'o' then
    redis.call('HSET', rk, 'v', ver, 'n', '', 't', t == 1 and '1' or string.format('%d', t),
      'vi', vi == 0 and '0' or string.format('%d', vi), 'e', now, 'er', nowr, 'ne', now,
      'd', now, 's', 'a')
    timers[#timers + 1] = now
    timers[#timers + 1] = id .. member_tail
    enrolled = enrolled + 1
  end
  st[#st + 1] = s
end
if enrolled > 0 then
  redis.call('ZADD', KEYS[1], unpack(timers))
  redis.call('HINCRBY', KEYS[2], ver .. ':enrolled', enrolled)
  redis.call('HINCRBY', KEYS[2], ver .. ':active', enrolled)
end
return {table.concat(st, ' '), posted}
