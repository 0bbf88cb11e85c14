-- Check-ins of one partition (POST /v1/webhooks/event, api_event_checkin.c): each record is
-- applied once per (event, lead) with a marker key (SET NX, long TTL), and posts the event
-- event.checked_in for its lead, atomically.
-- KEYS[1] nt:{p}:events
-- ARGV[1] key prefix "nt:{p}:"  ARGV[2] now (ms, plan clock)  ARGV[3] marker TTL (s)
-- ARGV[4..] per record three values: lead id, event id, checked_in_at ("" when not given)
-- Lead and marker keys are built from the prefix (architecture.md, "Keys read inside scripts").
-- Returns {letters}: one per record, "o" applied, "a" already applied, "m" no such lead.
local pre, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 3 do
  local lead, ev, at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('EXISTS', pre .. 'lead:' .. lead) == 0 then
    out[#out + 1] = 'm'
  elseif not redis.call('SET', pre .. 'ev:' .. ev .. ':' .. lead, now, 'NX', 'EX', ttl) then
    out[#out + 1] = 'a'
  else
    local e = {'l', lead, 't', 'event.checked_in', 'm', '0', 'at', now, 'event', ev}
    if at ~= '' then
      e[#e + 1] = 'checked_in_at'
      e[#e + 1] = at
    end
    redis.call('XADD', KEYS[1], '*', unpack(e))
    out[#out + 1] = 'o'
  end
end
return {table.concat(out, '')}
