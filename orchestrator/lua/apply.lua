-- Apply one batch of decisions for a partition, atomically (DESIGN.md "One transition").
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:timers  KEYS[3] nt:{p}:events  KEYS[4] nt:{p}:outbox
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] now (plan ms)  ARGV[4] key prefix "nt:{p}:"
-- ARGV[5] timeline length  ARGV[6] JSON batch:
--   {"d": [decision...], "e": [lead record...]}
--   decision: {"l","p","v","t" (expected state token),"n","s" ("a"|"d"),"x","d" (due, 0 none),
--              "vi","set":[[k,v|null]...],"sc","st","msg":[{"id","c","n","vi","pr":[k,v,...]}],
--              "h" (timeline text),"path":[node...],"left" (node left, or "")}
--   lead record: {"l","seen":[[type,ms]...],"h" (timeline text or ""),"ack":[event id...]}
--   "tz": [[lead, plan, token, due]...]: timers that fired without moving their run; the timer
--         is set to the run's own due time (0: removed) if the run is still at that token, and
--         removed when the run has ended or is gone
-- Returns {'FENCED'} or {'OK', r1, r2, ...} with, per decision, 0 when its state token no longer
-- matched (nothing of it applied), 1 when applied, or the enrolment's real ms when it ended the
-- run (for the enrol-to-exit latency).
local me, tok, now, pre, hmax = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end
local b = cjson.decode(ARGV[6])
local out = {'OK'}
-- funnel counters are summed over the batch and written once per field
local stats = {}
local function count(plan, f, n)
  local t = stats[plan]
  if not t then
    t = {}
    stats[plan] = t
  end
  t[f] = (t[f] or 0) + n
end

for _, r in ipairs(b.e or {}) do
  local lk = pre .. 'lead:' .. r.l
  if redis.call('EXISTS', lk) == 1 then
    for _, s in ipairs(r.seen or {}) do
      redis.call('HSET', lk, 'e:' .. s[1], s[2])
    end
    if r.h and r.h ~= '' then
      local hk = pre .. 'hist:' .. r.l
      redis.call('LPUSH', hk, now .. '|event|' .. r.h)
      redis.call('LTRIM', hk, 0, hmax - 1)
    end
  end
  for _, id in ipairs(r.ack or {}) do
    redis.call('XACK', KEYS[3], 'w', id)
    redis.call('XDEL', KEYS[3], id)
  end
end

for _, z in ipairs(b.tz or {}) do
  local member = z[1] .. '|' .. z[2]
  local cur = redis.call('HMGET', pre .. 'run:' .. z[1] .. ':' .. z[2], 't', 's')
  if cur[1] == false or cur[2] ~= 'a' then
    redis.call('ZREM', KEYS[2], member)
  elseif tostring(cur[1]) == tostring(z[3]) then
    if tonumber(z[4]) > 0 then
      redis.call('ZADD', KEYS[2], z[4], member)
    else
      redis.call('ZREM', KEYS[2], member)
    end
  end
end

for _, d in ipairs(b.d or {}) do
  local rk = pre .. 'run:' .. d.l .. ':' .. d.p
  local lk = pre .. 'lead:' .. d.l
  local member = d.l .. '|' .. d.p
  local cur = redis.call('HMGET', rk, 't', 's', 'er')
  if cur[1] == false or tostring(cur[1]) ~= tostring(d.t) or cur[2] ~= 'a' then
    out[#out + 1] = 0
  else
    local v = tostring(d.v)
    redis.call('HSET', rk, 'n', d.n, 't', tonumber(cur[1]) + 1, 'vi', d.vi, 'ne', now, 'd', d.d,
               's', d.s)
    if d.left and d.left ~= '' then
      count(d.p, v .. ':' .. d.left .. ':cur', -1)
    end
    for _, node in ipairs(d.path or {}) do
      count(d.p, v .. ':' .. node .. ':in', 1)
    end
    for _, kv in ipairs(d.set or {}) do
      if kv[2] == nil or kv[2] == cjson.null then
        redis.call('HDEL', lk, kv[1])
      else
        redis.call('HSET', lk, kv[1], kv[2])
      end
    end
    if d.sc and d.sc ~= 0 then
      redis.call('HINCRBY', lk, '_score', d.sc)
    end
    if d.st and d.st ~= '' then
      redis.call('HSET', lk, '_stage', d.st)
    end
    for _, m in ipairs(d.msg or {}) do
      local args = {'XADD', KEYS[4], '*', 'id', m.id, 'l', d.l, 'p', d.p, 'v', d.v, 'n', m.n,
                    'vi', m.vi, 'c', m.c}
      for _, x in ipairs(m.pr or {}) do
        args[#args + 1] = x
      end
      redis.call(unpack(args))
    end
    if d.h and d.h ~= '' then
      local hk = pre .. 'hist:' .. d.l
      redis.call('LPUSH', hk, now .. '|step|' .. d.h)
      redis.call('LTRIM', hk, 0, hmax - 1)
    end
    if d.s == 'd' then
      redis.call('HSET', rk, 'x', d.x or '', 'xt', now)
      redis.call('ZREM', KEYS[2], member)
      redis.call('HSET', lk, 'r:' .. d.p, 'd')
      count(d.p, v .. ':active', -1)
      count(d.p, v .. ':exit:' .. (d.x or ''), 1)
      out[#out + 1] = tonumber(cur[3] or '0') or 0
    else
      count(d.p, v .. ':' .. d.n .. ':cur', 1)
      if tonumber(d.d) > 0 then
        redis.call('ZADD', KEYS[2], d.d, member)
      else
        redis.call('ZREM', KEYS[2], member)
      end
      out[#out + 1] = 1
    end
  end
end
for plan, t in pairs(stats) do
  local sk = pre .. 'stats:' .. plan
  for f, n in pairs(t) do
    if n ~= 0 then
      redis.call('HINCRBY', sk, f, n)
    end
  end
end
return out
