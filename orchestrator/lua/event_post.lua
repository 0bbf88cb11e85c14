-- Accept an event for a lead (POST /v1/events): the lead must exist, then the event joins its
-- partition's stream, atomically.
-- KEYS[1] nt:{p}:lead:<id>  KEYS[2] nt:{p}:events
-- ARGV[1] lead id  ARGV[2] type  ARGV[3] machine "0"|"1"  ARGV[4] at (ms, plan clock)
-- ARGV[5..] attribute name, value pairs
-- Returns {"ok", stream id} or {"missing"}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local ev = {'l', ARGV[1], 't', ARGV[2], 'm', ARGV[3], 'at', ARGV[4]}
for i = 5, #ARGV do
  ev[#ev + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ev))
return {'ok', id}
