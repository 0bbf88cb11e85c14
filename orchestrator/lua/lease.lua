-- Partition lease with a fencing token (DESIGN.md "Guarantees").
-- KEYS[1] nt:{p}:lease (hash: owner, token, until)   KEYS[2] nt:{p}:events   KEYS[3] nt:{p}:outbox (hash)
-- ARGV[1] worker id   ARGV[2] mode: acquire | renew | release   ARGV[3] lease ms
-- Returns {1, token} when the caller holds the lease afterwards, {0, owner-or-empty} otherwise.
-- Time comes from the Redis server, so workers with skewed clocks still agree.
local me, mode, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'until')
local owner, token, untl = h[1] or '', tonumber(h[2] or '0'), tonumber(h[3] or '0')

if mode == 'release' then
  if owner == me then
    redis.call('HSET', KEYS[1], 'owner', '', 'until', 0)
  end
  return {0, ''}
end
if owner == me and untl >= now then
  redis.call('HSET', KEYS[1], 'until', now + ttl)
  return {1, token}
end
if owner ~= '' and owner ~= me and untl >= now then
  return {0, owner}
end
if mode == 'renew' then
  return {0, ''}
end
-- Free, expired, or ours but expired: take it with a new fencing token, so that anything the
-- previous holder still has in flight is refused.
token = token + 1
redis.call('HSET', KEYS[1], 'owner', me, 'token', token, 'until', now + ttl)
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], 'w', '0', 'MKSTREAM')
-- An outbox written by an earlier version is a stream: its messages move into the hash.
if redis.call('TYPE', KEYS[3]).ok == 'stream' then
  local old = redis.call('XRANGE', KEYS[3], '-', '+')
  redis.call('DEL', KEYS[3])
  for _, e in ipairs(old) do
    local f = e[2]
    if f[1] == 'id' and f[13] == 'c' then
      local params = {}
      for i = 15, #f do
        params[#params + 1] = f[i]
      end
      redis.call('HSET', KEYS[3], f[2], cmsgpack.pack({f[4], f[6], f[8], f[10], f[12], f[14],
                                                        params}))
    end
  end
end
return {1, token}
