-- Enrol a lead in a plan (POST /v1/leads/{id}/enrol), atomically: the run, its first timer (due
-- now), the lead's r:<plan> mark and the plan's counters. The run's first step writes the
-- timeline line "enrolled in <plan> v<ver>". Bulk enrolment applies the same rules in
-- api_enrol_many.lua.
-- KEYS[1] nt:{p}:lead:<id>  KEYS[2] nt:{p}:run:<id>:<plan>  KEYS[3] nt:{p}:timers
-- KEYS[4] nt:{p}:stats:<plan>  KEYS[5] nt:{p}:hist:<id> (unused)
-- ARGV[1] lead id  ARGV[2] plan id  ARGV[3] version  ARGV[4] now (ms, plan clock)
-- ARGV[5] now (ms, real clock)  ARGV[6] "1" when the re-entry policy is AFTER_EXIT
-- ARGV[7] re-entry cooldown (ms)  ARGV[8] unused
-- Returns {"ok", token}, {"missing"} (no lead), {"conflict"} (active in the plan), {"never"}
-- (done, re-entry never) or {"cooldown", ms to go}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local run = redis.call('HMGET', KEYS[2], 's', 't', 'vi', 'xt')
local s = run[1]
local mark = redis.call('HGET', KEYS[1], 'r:' .. ARGV[2])
if s == 'a' or (not s and mark == 'a') then
  return {'conflict'}
end
local t = 1
local vi = 0
if s or mark then
  if ARGV[6] ~= '1' then
    return {'never'}
  end
  local xt = tonumber(run[4]) or 0
  local left = xt + tonumber(ARGV[7]) - tonumber(ARGV[4])
  if left > 0 then
    return {'cooldown', string.format('%d', left)}
  end
  t = (tonumber(run[2]) or 0) + 1
  vi = tonumber(run[3]) or 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'v', ARGV[3], 'n', '', 't', string.format('%d', t),
  'vi', string.format('%d', vi), 'e', ARGV[4], 'er', ARGV[5], 'ne', ARGV[4], 'd', ARGV[4],
  's', 'a')
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1] .. '|' .. ARGV[2])
redis.call('HSET', KEYS[1], 'r:' .. ARGV[2], 'a')
redis.call('HINCRBY', KEYS[4], ARGV[3] .. ':enrolled', 1)
redis.call('HINCRBY', KEYS[4], ARGV[3] .. ':active', 1)
return {'ok', string.format('%d', t)}
