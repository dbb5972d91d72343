-- tenant-governance Redis ledger. One script, three operations, so every
-- operation runs atomically on the server and shares the helpers below.
--
-- KEYS[1] = hold index (sorted set: hold id -> expiry ms)
-- KEYS[2] = this hold's record (hash)
-- KEYS[3..] = one hash per level
-- ARGV[1] = op ('reserve' | 'settle' | 'release' | 'register' | 'usage')
-- ARGV[2] = hold id, ARGV[3] = hold ttl ms, ARGV[4] = tokens, ARGV[5] = cost,
-- ARGV[6] = hold record key prefix, ARGV[7] = take a request (1/0)
-- then 9 values per level (see level()).
-- Level hash fields: tw/tu/th (token window, used, held), cw/cu/ch (cost),
-- tl (stored lifetime token limit), bt/bts (bucket level, timestamp ms).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local NV = 9

local function fmt(x) return string.format('%.0f', x) end
local function num(x, d) if x then return tonumber(x) end return d end

local function level(i)
  local b = 7 + (i - 1) * NV
  return {
    key = KEYS[2 + i],
    tkind = tonumber(ARGV[b + 1]), tlim = tonumber(ARGV[b + 2]), tper = tonumber(ARGV[b + 3]),
    ckind = tonumber(ARGV[b + 4]), clim = tonumber(ARGV[b + 5]), cper = tonumber(ARGV[b + 6]),
    rcap = tonumber(ARGV[b + 7]), rrate = tonumber(ARGV[b + 8]), keep = tonumber(ARGV[b + 9]),
  }
end

-- Remove a hold's amounts from every level it was taken at.
local function unhold(rec)
  local v = redis.call('HMGET', rec, 't', 'c', 'n')
  if not v[3] then return 0 end
  local ht, hc, n = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  for i = 1, n do
    local k = redis.call('HGET', rec, 'k' .. i)
    if k and redis.call('EXISTS', k) == 1 then
      local h = redis.call('HMGET', k, 'th', 'ch')
      redis.call('HSET', k, 'th', fmt(math.max(0, num(h[1], 0) - ht)),
                            'ch', fmt(math.max(0, num(h[2], 0) - hc)))
    end
  end
  redis.call('DEL', rec)
  return 1
end

-- Reclaim holds whose TTL has passed (a crashed process's reservations).
local function reclaim()
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 32)
  for _, id in ipairs(ids) do
    unhold(ARGV[6] .. id)
    redis.call('ZREM', KEYS[1], id)
  end
end

-- Current (window, used) of a resource; kind 1 = periodic.
local function current(k, kind, per, wf, uf)
  local v = redis.call('HMGET', k, wf, uf)
  if kind == 1 then
    local w = math.floor(now / per)
    if num(v[1], -1) ~= w then return w, 0 end
    return w, num(v[2], 0)
  end
  return 0, num(v[2], 0)
end

-- kind: 0 none, 1 periodic, 2 lifetime, 3 registered (stored limit)
local function limit_of(k, kind, lim)
  if kind == 0 then return nil end
  if kind == 3 then return num(redis.call('HGET', k, 'tl'), nil) end
  return lim
end

local function retry(kind, per)
  if kind == 1 then return per - (now % per) end
  return -1
end

local function bucket(L)
  local b = redis.call('HMGET', L.key, 'bt', 'bts')
  local level = num(b[1], L.rcap)
  local at = num(b[2], now)
  return math.min(L.rcap, level + math.max(0, now - at) * L.rrate)
end

local function remember(L)
  if L.tkind == 2 then redis.call('HSET', L.key, 'tl', fmt(L.tlim)) end
  if L.keep > 0 then
    local ttl = redis.call('PTTL', L.key)
    if ttl < L.keep then redis.call('PEXPIRE', L.key, L.keep) end
  end
end

local n = #KEYS - 2

if op == 'reserve' then
  reclaim()
  local at, ac = tonumber(ARGV[4]), tonumber(ARGV[5])
  local take = ARGV[7] == '1'
  local levels = {}
  for i = 1, n do
    local L = level(i)
    levels[i] = L
    local tw, tu = current(L.key, L.tkind, L.tper, 'tw', 'tu')
    local tl = limit_of(L.key, L.tkind, L.tlim)
    local th = num(redis.call('HGET', L.key, 'th'), 0)
    if tl and tu + th + at > tl then return {0, i, retry(L.tkind, L.tper), 1} end
    L.tw, L.tu = tw, tu
    local cw, cu = current(L.key, L.ckind, L.cper, 'cw', 'cu')
    local cl = limit_of(L.key, L.ckind, L.clim)
    local ch = num(redis.call('HGET', L.key, 'ch'), 0)
    if cl and cu + ch + ac > cl then return {0, i, retry(L.ckind, L.cper), 2} end
    L.cw, L.cu = cw, cu
    if take and L.rcap >= 0 then
      local level = bucket(L)
      if level < 1 then
        local r = -1
        if L.rrate > 0 then r = math.ceil((1 - level) / L.rrate) end
        return {0, i, r, 3}
      end
      L.bt = level - 1
    end
  end
  local rec = KEYS[2]
  redis.call('HSET', rec, 't', ARGV[4], 'c', ARGV[5], 'n', n)
  for i = 1, n do
    local L = levels[i]
    local th = num(redis.call('HGET', L.key, 'th'), 0)
    local ch = num(redis.call('HGET', L.key, 'ch'), 0)
    redis.call('HSET', L.key, 'tw', fmt(L.tw), 'tu', fmt(L.tu), 'th', fmt(th + at),
                              'cw', fmt(L.cw), 'cu', fmt(L.cu), 'ch', fmt(ch + ac))
    if L.bt then redis.call('HSET', L.key, 'bt', tostring(L.bt), 'bts', fmt(now)) end
    remember(L)
    redis.call('HSET', rec, 'k' .. i, L.key)
  end
  local ttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', rec, ttl + 86400000)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  return {1}
elseif op == 'settle' or op == 'release' then
  unhold(KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[2])
  if op == 'settle' then
    local at, ac = tonumber(ARGV[4]), tonumber(ARGV[5])
    for i = 1, n do
      local L = level(i)
      local tw, tu = current(L.key, L.tkind, L.tper, 'tw', 'tu')
      local cw, cu = current(L.key, L.ckind, L.cper, 'cw', 'cu')
      redis.call('HSET', L.key, 'tw', fmt(tw), 'tu', fmt(tu + at), 'cw', fmt(cw), 'cu', fmt(cu + ac))
      remember(L)
    end
  end
  return {1}
elseif op == 'register' then
  for i = 1, n do remember(level(i)) end
  return {1}
elseif op == 'usage' then
  local L = level(1)
  local _, tu = current(L.key, L.tkind, L.tper, 'tw', 'tu')
  local _, cu = current(L.key, L.ckind, L.cper, 'cw', 'cu')
  local h = redis.call('HMGET', L.key, 'th', 'ch')
  return {fmt(tu), fmt(num(h[1], 0)), fmt(cu), fmt(num(h[2], 0))}
end
return redis.error_reply('unknown op')
