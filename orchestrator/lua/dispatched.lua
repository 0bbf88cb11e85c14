-- Record channel outcomes: acknowledge and delete outbox entries and post each outcome as an
-- event for the lead, atomically, so an outcome is never lost nor posted twice.
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:outbox  KEYS[3] nt:{p}:events
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] now (plan ms)
-- ARGV[4..] groups of 7: outbox id, lead, plan, node, visit, outcome, detail
local me, tok, now = ARGV[1], ARGV[2], ARGV[3]
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end
local n = 0
for i = 4, #ARGV, 7 do
  if redis.call('XACK', KEYS[2], 'd', ARGV[i]) == 1 then
    redis.call('XADD', KEYS[3], '*', 'l', ARGV[i + 1], 't', 'outcome', 'm', '0', 'at', now,
               'plan', ARGV[i + 2], 'node', ARGV[i + 3], 'visit', ARGV[i + 4],
               'outcome', ARGV[i + 5], 'detail', ARGV[i + 6])
    n = n + 1
  end
  redis.call('XDEL', KEYS[2], ARGV[i])
end
return {'OK', n}
