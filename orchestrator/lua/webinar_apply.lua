-- Attendance records of one partition (POST /v1/webhooks/webinar, api_webinar.c): each record
-- is applied once per (webinar, lead, kind) with a marker key (SET NX, long TTL), and posts the
-- event webinar.<kind> for its lead, atomically.
-- KEYS[1] nt:{p}:events
-- ARGV[1] key prefix "nt:{p}:"  ARGV[2] now (ms, plan clock)  ARGV[3] marker TTL (s)
-- ARGV[4..] per record five values: lead id, webinar id, kind (registered | attended |
--   recording_viewed), minutes ("" when not given), registrant id ("" when not given)
-- Lead and marker keys are built from the prefix (architecture.md, "Keys read inside scripts").
-- Returns {letters}: one per record, "o" applied, "a" already applied, "m" no such lead.
local pre, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 5 do
  local lead, wb, kind, min, reg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('EXISTS', pre .. 'lead:' .. lead) == 0 then
    out[#out + 1] = 'm'
  elseif not redis.call('SET', pre .. 'wb:' .. wb .. ':' .. lead .. ':' .. kind, now, 'NX', 'EX', ttl) then
    out[#out + 1] = 'a'
  else
    local ev = {'l', lead, 't', 'webinar.' .. kind, 'm', '0', 'at', now, 'webinar', wb}
    if min ~= '' then
      ev[#ev + 1] = 'minutes'
      ev[#ev + 1] = min
    end
    if reg ~= '' then
      ev[#ev + 1] = 'registrant'
      ev[#ev + 1] = reg
    end
    redis.call('XADD', KEYS[1], '*', unpack(ev))
    out[#out + 1] = 'o'
  end
end
return {table.concat(out, '')}
