-- An open or a click from a signed tracking link (GET /t/o/<token>, /t/c/<token>): the lead must
-- exist, then the event joins its partition's stream, atomically. A click also goes into the
-- message's click record (a sorted set of link -> real ms, kept for a short while): another
-- link of the same message clicked within the window means a scanner following every link, so
-- this click is a machine's.
-- KEYS[1] nt:{p}:lead:<id>  KEYS[2] nt:{p}:events  KEYS[3] nt:{p}:clicks:<message id>
-- ARGV[1] lead id  ARGV[2] type  ARGV[3] machine "0"|"1"  ARGV[4] at (ms, plan clock)
-- ARGV[5] real ms  ARGV[6] url ("" for opens)  ARGV[7] window ms  ARGV[8] record ttl ms
-- ARGV[9] why the caller thinks it is a machine ("" when it does not)  ARGV[10..] name, value
-- Returns {"ok", stream id, machine "0"|"1"} or {"missing"}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local machine, why = ARGV[3], ARGV[9]
if ARGV[6] ~= '' then
  local now = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[7]))
  for _, url in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if url ~= ARGV[6] then
      if machine ~= '1' then
        why = 'many_links'
      end
      machine = '1'
      break
    end
  end
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
end
local ev = {'l', ARGV[1], 't', ARGV[2], 'm', machine, 'at', ARGV[4]}
for i = 10, #ARGV do
  ev[#ev + 1] = ARGV[i]
end
if machine == '1' and why ~= '' then
  ev[#ev + 1] = 'machine_reason'
  ev[#ev + 1] = why
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ev))
return {'ok', id, machine}
