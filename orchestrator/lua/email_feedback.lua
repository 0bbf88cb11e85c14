-- What happened to a message after it left: an unsubscribe (signed link, one-click POST or the
-- provider), or a provider's report (delivered, deferred, bounced, complaint). The lead must
-- exist; the marks on the lead and the event are written together.
--   unsubscribe: _unsub = real ms, and an email.unsubscribed event, once: a second one writes
--                nothing and answers "already"
--   bounced hard, complaint: _suppressed = reason (the first reason stays), and the event
--   delivered, deferred, bounced soft: the event only
-- Events are a person's (m 0): goals such as "event email.unsubscribed seen" see them.
-- KEYS[1] nt:{p}:lead:<id>  KEYS[2] nt:{p}:events
-- ARGV[1] lead id  ARGV[2] kind (unsubscribe delivered deferred bounced complaint)
-- ARGV[3] at (ms, plan clock)  ARGV[4] real ms  ARGV[5] message id  ARGV[6] source
-- ARGV[7] bounce ("hard", "soft" or "")  ARGV[8] reason
-- Returns {"ok", stream id}, {"already"} or {"missing"}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local kind = ARGV[2]
local ev = {'l', ARGV[1], 't', '', 'm', '0', 'at', ARGV[3], 'message', ARGV[5], 'source', ARGV[6]}
if kind == 'unsubscribe' then
  if redis.call('HSETNX', KEYS[1], '_unsub', ARGV[4]) == 0 then
    return {'already'}
  end
  ev[4] = 'email.unsubscribed'
elseif kind == 'bounced' and ARGV[7] == 'hard' or kind == 'complaint' then
  local why = kind == 'complaint' and 'complaint' or 'hard_bounce'
  if ARGV[8] ~= '' then
    why = why .. ': ' .. ARGV[8]
  end
  redis.call('HSETNX', KEYS[1], '_suppressed', why)
  ev[4] = kind == 'complaint' and 'email.complaint' or 'email.bounced'
else
  ev[4] = 'email.' .. kind
end
if ARGV[7] ~= '' then
  ev[#ev + 1] = 'bounce'
  ev[#ev + 1] = ARGV[7]
end
if ARGV[8] ~= '' then
  ev[#ev + 1] = 'reason'
  ev[#ev + 1] = ARGV[8]
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ev))
return {'ok', id}
