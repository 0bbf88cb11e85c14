-- Apply one batch of decisions for a partition, atomically (DESIGN.md "One transition").
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:timers  KEYS[3] nt:{p}:events  KEYS[4] nt:{p}:outbox
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] now (plan ms)  ARGV[4] key prefix "nt:{p}:"
-- ARGV[5] timeline length  ARGV[6] the batch, MessagePack (numbers as decimal strings):
--   {decisions, lead records, timer fixes, outbox ids}
--   decision: {lead, plan, version, expected state token, node, "a"|"d", exit reason, due (0:
--              none), visits, {attr, value|false, ...}, score delta, stage ("": unchanged),
--              {{message id, outbox record, "c" when its channel needs the lead's consent
--              marks else ""}, ...}, timeline line,
--              {funnel field, change, ...} (the plan's stats hash: "<version>:<node>:in" for each
--              node entered, "<version>:<node>:cur" -1 for the node left and +1 for the node it
--              rests at, "<version>:active" -1 and "<version>:exit:<reason>" +1 when it ends)}
--   lead record: {lead, {event type, ms, ...} (events seen), timeline line, {event id, ...}}
--   timer fix: {lead, plan, state token, due}: a timer fired without moving its run; it is set
--              to the run's own due time (0: removed) while the run is still at that token, and
--              removed when the run has ended or is gone
--   outbox ids: messages whose outcome this batch consumed: deleted from the outbox
-- The outbox is a hash: message id (the idempotency key) -> outbox record, the MessagePack
-- array {lead, plan, version, node, visit, channel, {param, value, ...}} the worker packed
-- (outbox.lua unpacks it when a partition is taken over).
-- Returns {'FENCED'} or {'OK', results, message ids, marks}: per decision 0 when its state token
-- no longer matched (nothing of it applied), 1 when applied, or the enrolment's real ms when it
-- ended the run (for the enrol-to-exit latency); per message, in order, its message id as
-- committed ("" for messages of decisions not applied) and the lead's suppression when it was
-- committed ("u" unsubscribed, "s" suppressed, both, or ""; always "" for a message not marked
-- "c").
local me, tok, now, pre, hmax = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end
local b = cmsgpack.unpack(ARGV[6])
local results, ids, marks = {}, {}, {}

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

-- The timeline is one string per lead of lines "<at>|<kind>|<text>\n", oldest first: far smaller
-- in Redis than a list or stream per lead (architecture.md). The worker sends each line whole;
-- they are gathered per lead over the batch and appended with one APPEND (the AOF carries only
-- the new lines); once the string outgrows hmax lines of 160 bytes, it is cut back to its
-- newest hmax lines.
local tl, tlorder = {}, {}
local function timeline(lead, line)
  local t = tl[lead]
  if t == nil then
    tl[lead] = line
    tlorder[#tlorder + 1] = lead
  elseif type(t) == 'string' then
    tl[lead] = {t, line}
  else
    t[#t + 1] = line
  end
end

local function timeline_flush()
  for _, lead in ipairs(tlorder) do
    local hk = pre .. 'hist:' .. lead
    local t = tl[lead]
    if redis.call('APPEND', hk, type(t) == 'string' and t or table.concat(t)) > hmax * 160 then
      local old = redis.call('GET', hk)
      local _, lines = string.gsub(old, '\n', '\n')
      if lines > hmax then
        local pos = 0
        for _ = 1, lines - hmax do
          pos = string.find(old, '\n', pos + 1, true)
        end
        redis.call('SET', hk, string.sub(old, pos + 1))
      end
    end
  end
end

-- one command per up to `per` arguments of list (pairs stay whole when per is even)
local function chunked(cmd, key, list, per)
  for i = 1, #list, per do
    redis.call(cmd, key, unpack(list, i, math.min(i + per - 1, #list)))
  end
end

local acks = {}
for _, r in ipairs(b[2]) do
  local lk = pre .. 'lead:' .. r[1]
  if redis.call('EXISTS', lk) == 1 then
    local seen = r[2]
    for i = 1, #seen, 2 do
      redis.call('HSET', lk, 'e:' .. seen[i], seen[i + 1])
    end
    if r[3] ~= '' then
      timeline(r[1], r[3])
    end
  end
  for _, id in ipairs(r[4]) do
    acks[#acks + 1] = id
  end
end
for i = 1, #acks, 500 do
  local j = math.min(i + 499, #acks)
  redis.call('XACK', KEYS[3], 'w', unpack(acks, i, j))
  redis.call('XDEL', KEYS[3], unpack(acks, i, j))
end
-- messages whose outcome this batch records leave the outbox
chunked('HDEL', KEYS[4], b[4], 500)

for _, z in ipairs(b[3]) do
  local member = z[1] .. '|' .. z[2]
  local cur = redis.call('HMGET', pre .. 'run:' .. z[1] .. ':' .. z[2], 't', 's')
  if cur[1] == false or cur[2] ~= 'a' then
    redis.call('ZREM', KEYS[2], member)
  elseif cur[1] == z[3] then
    if tonumber(z[4]) > 0 then
      redis.call('ZADD', KEYS[2], z[4], member)
    else
      redis.call('ZREM', KEYS[2], member)
    end
  end
end

-- Writes to the partition's keys are gathered over the batch and made once each (a command
-- from a script costs far more than its arguments): outbox records, timers set and removed.
-- A batch holds one decision per run, so no timer is both set and removed here.
local obox, zadd, zrem = {}, {}, {}
for _, d in ipairs(b[1]) do
  local lead, plan = d[1], d[2]
  local rk = pre .. 'run:' .. lead .. ':' .. plan
  local lk = pre .. 'lead:' .. lead
  local member = lead .. '|' .. plan
  local cur = redis.call('HMGET', rk, 't', 's', 'er', 'd')
  local msgs = d[13]
  if cur[1] ~= d[4] or cur[2] ~= 'a' then
    results[#results + 1] = 0
    for _ = 1, #msgs do
      ids[#ids + 1] = ''
      marks[#marks + 1] = ''
    end
  else
    local node, status, due = d[5], d[6], d[8]
    if status == 'd' then
      redis.call('HSET', rk, 'n', node, 't', tonumber(cur[1]) + 1, 'vi', d[9], 'ne', now,
                 'd', due, 's', status, 'x', d[7], 'xt', now)
    else
      redis.call('HSET', rk, 'n', node, 't', tonumber(cur[1]) + 1, 'vi', d[9], 'ne', now,
                 'd', due, 's', status)
    end
    local f = d[15]
    for i = 1, #f, 2 do
      count(plan, f[i], f[i + 1])
    end
    -- the lead's fields: attribute changes in order (the last one of a name wins), the stage
    -- and, when the run ends, its r:<plan> mark, in one HSET (and one HDEL)
    local set, hs = d[10], nil
    if #set > 0 then
      local last, hd = {}, {}
      hs = {}
      for i = 1, #set, 2 do
        last[set[i]] = set[i + 1]
      end
      for k, val in pairs(last) do
        if val == false then
          hd[#hd + 1] = k
        else
          hs[#hs + 1] = k
          hs[#hs + 1] = val
        end
      end
      if #hd > 0 then
        redis.call('HDEL', lk, unpack(hd))
      end
    end
    if d[12] ~= '' then
      hs = hs or {}
      hs[#hs + 1] = '_stage'
      hs[#hs + 1] = d[12]
    end
    if status == 'd' then
      hs = hs or {}
      hs[#hs + 1] = 'r:' .. plan
      hs[#hs + 1] = 'd'
    end
    if hs and #hs > 0 then
      redis.call('HSET', lk, unpack(hs))
    end
    if d[11] ~= '0' then
      redis.call('HINCRBY', lk, '_score', d[11])
    end
    local mark
    for _, m in ipairs(msgs) do
      if m[3] == 'c' then
        if not mark then
          local u = redis.call('HMGET', lk, '_unsub', '_suppressed')
          mark = (u[1] and 'u' or '') .. (u[2] and 's' or '')
        end
        marks[#marks + 1] = mark
      else
        marks[#marks + 1] = ''
      end
      obox[#obox + 1] = m[1]
      obox[#obox + 1] = m[2]
      ids[#ids + 1] = m[1]
    end
    if d[14] ~= '' then
      timeline(lead, d[14])
    end
    if status ~= 'd' and tonumber(due) > 0 then
      zadd[#zadd + 1] = due
      zadd[#zadd + 1] = member
    elseif cur[4] ~= '0' then
      -- a run without a due time has no timer to remove
      zrem[#zrem + 1] = member
    end
    if status == 'd' then
      results[#results + 1] = tonumber(cur[3] or '0') or 0
    else
      results[#results + 1] = 1
    end
  end
end
chunked('HSET', KEYS[4], obox, 500)
chunked('ZADD', KEYS[2], zadd, 500)
chunked('ZREM', KEYS[2], zrem, 500)

for plan, t in pairs(stats) do
  local sk = pre .. 'stats:' .. plan
  for f, n in pairs(t) do
    if n ~= 0 then
      redis.call('HINCRBY', sk, f, n)
    end
  end
end
timeline_flush()
return {'OK', results, ids, marks}
