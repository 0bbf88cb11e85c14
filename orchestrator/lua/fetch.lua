-- One batch of work for a partition: due timers and events, with the snapshots to decide them.
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:timers  KEYS[3] nt:{p}:events
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] now (plan ms)  ARGV[4] max items
-- ARGV[5] key prefix "nt:{p}:"  ARGV[6] reclaim idle ms (events of a dead worker)
-- ARGV[7] '1': outcomes only (shutting down)  ARGV[8..] lead, plan pairs: runs whose message a
-- channel has just delivered (outcomes kept in the worker's memory, which come first); plan ""
-- when the worker decides on its own snapshot and needs nothing read
-- Returns {'FENCED'} when the caller does not hold the lease, else
-- {'OK', next_due, timers, events, outcomes} where
--   timers = { {lead, plan, leadfields, runfields}, ... }
--   events = { {id, lead, eventfields, leadfields, {plan, runfields, ...}}, ... }
--   outcomes = { {index of the pair (0-based), leadfields, runfields} or index, ... } (a bare
--              index for plan "": nothing read)
-- At most one item per lead: a lead's further timers and events wait for the next batch (its
-- events stay pending in the consumer group and come first next time), so a batch never holds
-- two decisions for one run.
local me, tok, now, n, pre = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end

local seen, timers, events, outcomes = {}, {}, {}, {}
for i = 8, #ARGV - 1, 2 do
  local lead, plan = ARGV[i], ARGV[i + 1]
  if not seen[lead] then
    seen[lead] = true
    if plan == '' then
      -- the caller decides this one on its own snapshot
      outcomes[#outcomes + 1] = (i - 8) / 2
    else
      outcomes[#outcomes + 1] = {(i - 8) / 2, redis.call('HGETALL', pre .. 'lead:' .. lead),
                                 redis.call('HGETALL', pre .. 'run:' .. lead .. ':' .. plan)}
    end
  end
end
if ARGV[7] == '1' then
  n = 0
end
local due = {}
if n > 0 then
  due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, n)
end
for _, m in ipairs(due) do
  local sep = string.find(m, '|', 1, true)
  if sep then
    local lead, plan = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
    if not seen[lead] then
      seen[lead] = true
      timers[#timers + 1] = {lead, plan, redis.call('HGETALL', pre .. 'lead:' .. lead),
                             redis.call('HGETALL', pre .. 'run:' .. lead .. ':' .. plan)}
    end
  else
    redis.call('ZREM', KEYS[2], m)
  end
end

local function take(entries)
  for _, e in ipairs(entries) do
    if #events + #timers >= n then
      return
    end
    local f = e[2]
    if f and f[1] == 'l' then
      local lead = f[2]
      if not seen[lead] then
        seen[lead] = true
        local lk = pre .. 'lead:' .. lead
        local lf = redis.call('HGETALL', lk)
        local runs = {}
        for i = 1, #lf, 2 do
          if string.sub(lf[i], 1, 2) == 'r:' and lf[i + 1] == 'a' then
            local plan = string.sub(lf[i], 3)
            runs[#runs + 1] = plan
            runs[#runs + 1] = redis.call('HGETALL', pre .. 'run:' .. lead .. ':' .. plan)
          end
        end
        events[#events + 1] = {e[1], lead, f, lf, runs}
      end
    elseif f == nil or f == false then
      -- deleted entry still pending: acknowledge it away
      redis.call('XACK', KEYS[3], 'w', e[1])
    else
      redis.call('XACK', KEYS[3], 'w', e[1])
      redis.call('XDEL', KEYS[3], e[1])
    end
  end
end

if n > 0 and #timers < n then
  -- ours first: events deferred from the previous batch, or left by a failed apply
  local mine = redis.call('XREADGROUP', 'GROUP', 'w', me, 'COUNT', n, 'STREAMS', KEYS[3], '0')
  if mine and mine[1] then take(mine[1][2]) end
  if #events + #timers < n then
    local c = redis.call('XAUTOCLAIM', KEYS[3], 'w', me, tonumber(ARGV[6]), '0-0', 'COUNT', n)
    take(c[2])
  end
  if #events + #timers < n then
    local new = redis.call('XREADGROUP', 'GROUP', 'w', me, 'COUNT', n - #events - #timers,
                           'STREAMS', KEYS[3], '>')
    if new and new[1] then take(new[1][2]) end
  end
end

local nd = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local next_due = -1
if nd[2] then next_due = tonumber(nd[2]) end
return {'OK', next_due, timers, events, outcomes}
