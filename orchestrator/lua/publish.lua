-- Publish a new version of a plan (POST /v1/plans), atomically. The caller packed the Workflow
-- with version = expected latest + 1; when another publish got there first the caller repacks.
-- KEYS[1] nt:plan:{<id>}  KEYS[2] nt:plan:{<id>}:<ver> (one slot; the caller adds <id> to nt:plans)
-- ARGV[1] plan id  ARGV[2] expected latest ("0": none)  ARGV[3] version  ARGV[4] bytes
-- ARGV[5] name  ARGV[6] now (ms)  ARGV[7] "1" to activate even when one is active
-- Returns {"ok", version, active ("1"|"0")} or {"retry", latest}.
local latest = redis.call('HGET', KEYS[1], 'latest') or '0'
if latest ~= ARGV[2] or redis.call('EXISTS', KEYS[2]) == 1 then
  return {'retry', latest}
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'latest', ARGV[3], 'name', ARGV[5], 'published:' .. ARGV[3], ARGV[6])
local active = '0'
if ARGV[7] == '1' or not redis.call('HGET', KEYS[1], 'active') then
  redis.call('HSET', KEYS[1], 'active', ARGV[3])
  active = '1'
end
return {'ok', ARGV[3], active}
