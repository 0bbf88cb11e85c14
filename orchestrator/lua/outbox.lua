-- Messages committed to a partition's outbox that the caller does not hold in memory: read
-- after taking the partition over, or after an apply whose answer never came.
-- KEYS[1] nt:{p}:lease  KEYS[2] nt:{p}:outbox (hash: message id -> outbox record, apply.lua)
-- ARGV[1] worker  ARGV[2] fencing token  ARGV[3] max  ARGV[4] key prefix  ARGV[5] HSCAN cursor
-- Returns {'FENCED'} or {'OK', next cursor ("0" when done), {id, fields, leadfields}, ...}
-- where fields are 'id', id, 'l', lead, 'p', plan, 'v', version, 'n', node, 'vi', visit,
-- 'c', channel, then the parameters as name, value pairs.
local me, tok, n, pre = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if l[1] ~= me or l[2] ~= tok then
  return {'FENCED'}
end
local r = redis.call('HSCAN', KEYS[2], ARGV[5], 'COUNT', n)
local out = {'OK', r[1]}
local kv = r[2]
for i = 1, #kv - 1, 2 do
  local ok, rec = pcall(cmsgpack.unpack, kv[i + 1])
  if ok and type(rec) == 'table' and #rec == 7 and type(rec[7]) == 'table' then
    local f = {'id', kv[i], 'l', rec[1], 'p', rec[2], 'v', rec[3], 'n', rec[4], 'vi', rec[5],
               'c', rec[6]}
    for _, x in ipairs(rec[7]) do
      f[#f + 1] = x
    end
    out[#out + 1] = {kv[i], f, redis.call('HGETALL', pre .. 'lead:' .. rec[1])}
  else
    -- not a record this version wrote: nothing can deliver it
    redis.call('HDEL', KEYS[2], kv[i])
  end
end
return out
