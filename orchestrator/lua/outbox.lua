-- Messages to dispatch for a partition, each with its lead's attributes.
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:outbox
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] max  ARGV[4] key prefix  ARGV[5] reclaim idle ms
-- ARGV[6] '1' to include this worker's own pending entries (after taking the partition over or a
-- failed acknowledgement), '0' otherwise
-- Returns {'FENCED'} or {'OK', {id, fields, leadfields}, ...}: first this worker's own pending
-- entries when asked, then entries a dead worker left
-- pending for longer than the reclaim time, then new ones.
local me, tok, n, pre = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end
local out = {'OK'}
local function take(entries)
  for _, e in ipairs(entries) do
    local f = e[2]
    if f and f[1] == 'id' then
      out[#out + 1] = {e[1], f, redis.call('HGETALL', pre .. 'lead:' .. f[4])}
    else
      redis.call('XACK', KEYS[2], 'd', e[1])
      redis.call('XDEL', KEYS[2], e[1])
    end
  end
end
if ARGV[6] == '1' then
  local mine = redis.call('XREADGROUP', 'GROUP', 'd', me, 'COUNT', n, 'STREAMS', KEYS[2], '0')
  if mine and mine[1] then take(mine[1][2]) end
end
local c = redis.call('XAUTOCLAIM', KEYS[2], 'd', me, tonumber(ARGV[5]), '0-0', 'COUNT', n)
take(c[2])
local new = redis.call('XREADGROUP', 'GROUP', 'd', me, 'COUNT', n, 'STREAMS', KEYS[2], '>')
if new and new[1] then take(new[1][2]) end
return out
