-- Partition lease with a fencing token (DESIGN.md "Guarantees").
-- KEYS[1] nt:{p}:lease (hash: owner, token, until)   KEYS[2] nt:{p}:events   KEYS[3] nt:{p}:outbox
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
for i, k in ipairs({KEYS[2], KEYS[3]}) do
  local g = (i == 1) and 'w' or 'd'
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', k, g, '0', 'MKSTREAM')
end
return {1, token}
