-- Make a published version the active one (POST /v1/plans/{id}/activate).
-- KEYS[1] nt:plan:{<id>}  KEYS[2] nt:plan:{<id>}:<ver>   ARGV[1] version
-- Returns {"ok"} or {"missing"}.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'missing'}
end
redis.call('HSET', KEYS[1], 'active', ARGV[1])
return {'ok'}
