-- Create or update a lead (POST /v1/leads, PATCH /v1/leads/{id}), atomically with the
-- lead.updated event that lets goals and branches of its active runs see the change.
-- KEYS[1] nt:{p}:lead:<id>   KEYS[2] nt:{p}:events
-- ARGV[1] "upsert" (create when missing) or "update" (refuse when missing)
-- ARGV[2] lead id   ARGV[3] now (ms, plan clock)   ARGV[4..] field, value pairs
-- Returns {"created"|"updated", <HGETALL of the lead>, 1 when an event was posted else 0},
-- or {"missing"} for an update of an unknown lead.
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists and ARGV[1] ~= 'upsert' then
  return {'missing'}
end
local n = #ARGV
if not exists then
  redis.call('HSET', KEYS[1], '_created', ARGV[3], unpack(ARGV, 4, n))
elseif n >= 5 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4, n))
end
local all = redis.call('HGETALL', KEYS[1])
local posted = 0
if exists and n >= 5 then
  local active = false
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'r:' and all[i + 1] == 'a' then
      active = true
      break
    end
  end
  if active then
    local ev = {'l', ARGV[2], 't', 'lead.updated', 'm', '0', 'at', ARGV[3]}
    for i = 4, n - 1, 2 do
      local name = ARGV[i]
      if name == '_score' then name = 'score' elseif name == '_stage' then name = 'stage' end
      ev[#ev + 1] = name
      ev[#ev + 1] = ARGV[i + 1]
    end
    redis.call('XADD', KEYS[2], '*', unpack(ev))
    posted = 1
  end
end
return {exists and 'updated' or 'created', all, posted}
