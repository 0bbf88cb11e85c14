-- Apply one batch of decisions for a partition, atomically (DESIGN.md "One transition").
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:timers  KEYS[3] nt:{p}:events  KEYS[4] nt:{p}:outbox
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] now (plan ms)  ARGV[4] key prefix "nt:{p}:"
-- ARGV[5] timeline length  ARGV[6] the batch, MessagePack (numbers as decimal strings):
--   {decisions, lead records, timer fixes, outbox ids, funnel, funnel per decision}
--   decision: {lead, plan, expected state token, node, new state token, visits (written with
--              the node-entered time, now), {run field, value, ...} (the due time when it
--              changes; s, x, xt when the run ends), timer ("": unchanged, "-": removed, else
--              its due time), {lead field, value, ...} (set: attributes, _stage, the r:<plan>
--              mark), {lead field, ...} (removed), score delta,
--              {message id, outbox record, "c" when its channel needs the lead's consent marks
--              else "", ...}, timeline line}
--              The worker builds the run and lead fields from the snapshot the token guards, so
--              the script only compares the token and writes. An empty list may come as the
--              empty string (# is 0 for both), which spares Lua a table.
--   lead record: {lead, {event type, ms, ...} (events seen), timeline line, {event id, ...}}
--   timer fix: {lead, plan, state token, due}: a timer fired without moving its run; it is set
--              to the run's own due time (0: removed) while the run is still at that token, and
--              removed when the run has ended or is gone
--   outbox ids: messages whose outcome this batch consumed: deleted from the outbox
--   funnel: {plan, {field, change, ...}, ...}: the plan stats hash counters of all decisions
--           summed ("<version>:<node>:in" for each node entered, "<version>:<node>:cur" -1 for
--           the node left and +1 for the node it rests at, "<version>:active" -1 and
--           "<version>:exit:<reason>" +1 when it ends)
--   funnel per decision: one MessagePack string of {{field, change, ...}, ...} in decision
--           order, unpacked only when a decision does not apply, to take its share back out
-- The outbox is a hash: message id (the idempotency key) -> outbox record, the MessagePack
-- array {lead, plan, version, node, visit, channel, {param, value, ...}} the worker packed
-- (outbox.lua unpacks it when a partition is taken over).
-- Returns {'FENCED'} or {'OK', results, marks}: results has per decision 1 when applied, 0 when
-- its state token no longer matched (nothing of it applied; nor are its messages committed);
-- marks is {message index, mark, ...} for the messages marked "c" (index 1-based over the
-- batch's messages in order) whose lead was suppressed when they were committed ("u"
-- unsubscribed, "s" suppressed, or both).
local me, tok, now, pre, hmax = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end
local b = cmsgpack.unpack(ARGV[6])
local results, marks = {}, {}

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
local mi, failed = 0, nil
for k, d in ipairs(b[1]) do
  local lead, plan = d[1], d[2]
  local rk = pre .. 'run:' .. lead .. ':' .. plan
  local msgs = d[12]
  if redis.call('HGET', rk, 't') ~= d[3] then
    results[k] = 0
    mi = mi + #msgs / 3
    failed = failed or {}
    failed[#failed + 1] = k
  else
    local lk = pre .. 'lead:' .. lead
    local x = d[7]
    if #x > 0 then
      redis.call('HSET', rk, 'n', d[4], 't', d[5], 'vi', d[6], 'ne', now, unpack(x))
    else
      redis.call('HSET', rk, 'n', d[4], 't', d[5], 'vi', d[6], 'ne', now)
    end
    if #d[10] > 0 then
      redis.call('HDEL', lk, unpack(d[10]))
    end
    if #d[9] > 0 then
      redis.call('HSET', lk, unpack(d[9]))
    end
    if d[11] ~= '0' then
      redis.call('HINCRBY', lk, '_score', d[11])
    end
    local mark
    for i = 1, #msgs, 3 do
      mi = mi + 1
      if msgs[i + 2] == 'c' then
        if not mark then
          local u = redis.call('HMGET', lk, '_unsub', '_suppressed')
          mark = (u[1] and 'u' or '') .. (u[2] and 's' or '')
        end
        if mark ~= '' then
          marks[#marks + 1] = mi
          marks[#marks + 1] = mark
        end
      end
      obox[#obox + 1] = msgs[i]
      obox[#obox + 1] = msgs[i + 1]
    end
    if d[13] ~= '' then
      timeline(lead, d[13])
    end
    local tm = d[8]
    if tm == '-' then
      zrem[#zrem + 1] = lead .. '|' .. plan
    elseif tm ~= '' then
      zadd[#zadd + 1] = tm
      zadd[#zadd + 1] = lead .. '|' .. plan
    end
    results[k] = 1
  end
end
chunked('HSET', KEYS[4], obox, 500)
chunked('ZADD', KEYS[2], zadd, 500)
chunked('ZREM', KEYS[2], zrem, 500)

-- the funnel counters, summed by the worker over all decisions; those of a decision that did
-- not apply are taken back out
local fun = b[5]
local back
if failed then
  local per = cmsgpack.unpack(b[6])
  back = {}
  for _, k in ipairs(failed) do
    local plan, f = b[1][k][2], per[k]
    local t = back[plan]
    if not t then
      t = {}
      back[plan] = t
    end
    for i = 1, #f, 2 do
      t[f[i]] = (t[f[i]] or 0) + tonumber(f[i + 1])
    end
  end
end
for j = 1, #fun, 2 do
  local plan, f = fun[j], fun[j + 1]
  local sk = pre .. 'stats:' .. plan
  local t = back and back[plan]
  for i = 1, #f, 2 do
    local n = tonumber(f[i + 1])
    if t and t[f[i]] then
      n = n - t[f[i]]
    end
    if n ~= 0 then
      redis.call('HINCRBY', sk, f[i], n)
    end
  end
end
timeline_flush()
return {'OK', results, marks}
