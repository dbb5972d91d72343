-- tenant-governance Redis ledger: one script that applies a *batch* of
-- ledger operations atomically, in order. The client sends every operation
-- that is waiting when the previous batch returns (group commit), so under
-- concurrency one script call carries many reservations and settlements,
-- and each level key is read once (HMGET) and written once (HSET) per
-- batch, however many operations touch it. Every operation still sees the
-- effects of the ones before it, exactly as if each ran as its own script:
-- a reservation is checked against everything held and used so far.
--
-- KEYS[1]   = hold index (sorted set: hold record -> expiry ms)
-- KEYS[2..] = the distinct level keys of the batch (one hash each)
-- ARGV[1] = number of level specs S, ARGV[2] = number of operations;
-- then S specs of NS values: index into KEYS, token kind, limit, period,
--   cost kind, limit, period, bucket capacity (-1: none), refill per ms,
--   retention ms (each distinct spec is sent once per batch);
-- then per operation: kind (1 reserve, 2 settle, 3 release, 4 register,
--   5 usage), hold record ('-' for 4 and 5), ttl ms, tokens, cost (to hold
--   at reserve, to charge at settle), held tokens, held cost (settle and
--   release: the hold's own amount), take a request (1/0), number of
--   levels, then one spec index (1-based) per level.
-- Reply, one string per operation: '1' (done), or a string
-- "0 <level> <retry ms, -1: never> <resource 1 tokens|2 cost|3 requests>"
-- for a refused reservation, or "<tokens used> <held> <cost used> <held>"
-- for usage.
--
-- Hold record (the index member): id \n tokens \n cost \n key1 \n key2 ...
-- built by the client, which rebuilds the same string from the hold it
-- kept, so settle and release find it with ZMSCORE/ZREM, and a crashed
-- process's holds can be reclaimed from the index alone. Keys cannot
-- contain '\n' (the prefix is checked by the client; level keys are uuids
-- and validated names).
--
-- Level hash fields: tw/tu/th (token window, used, held), cw/cu/ch (cost),
-- tl (stored lifetime token limit), bt/bts (bucket level, timestamp ms),
-- x (the expiry last set on the key, ms).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local NS = 10
-- Key retention is extended when it would fall this far below what a
-- level asks for (so a busy key gets a PEXPIRE at most every 30 s).
local SLACK = 30000

local function fmt(x) return string.format('%.0f', x) end
local function num(x, d) if x then return tonumber(x) end return d end

local nspecs, nops = tonumber(ARGV[1]), tonumber(ARGV[2])
local specs = {}
local p = 3
for i = 1, nspecs do
  specs[i] = {
    ki = tonumber(ARGV[p]),
    tkind = tonumber(ARGV[p + 1]), tlim = tonumber(ARGV[p + 2]), tper = tonumber(ARGV[p + 3]),
    ckind = tonumber(ARGV[p + 4]), clim = tonumber(ARGV[p + 5]), cper = tonumber(ARGV[p + 6]),
    rcap = tonumber(ARGV[p + 7]), rrate = tonumber(ARGV[p + 8]), keep = tonumber(ARGV[p + 9]),
  }
  p = p + NS
end
local first_op = p

-- Reclaim holds whose TTL has passed (a crashed process's reservations),
-- before any level is loaded.
local recs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 32)
for _, rec in ipairs(recs) do
  local parts = {}
  for x in string.gmatch(rec, '[^\n]+') do parts[#parts + 1] = x end
  local ht, hc = tonumber(parts[2]) or 0, tonumber(parts[3]) or 0
  for i = 4, #parts do
    local h = redis.call('HMGET', parts[i], 'th', 'ch')
    if h[1] or h[2] then
      redis.call('HSET', parts[i], 'th', fmt(math.max(0, num(h[1], 0) - ht)),
                                   'ch', fmt(math.max(0, num(h[2], 0) - hc)))
    end
  end
  redis.call('ZREM', KEYS[1], rec)
end

-- Which settled/released holds are still live (not reclaimed): one
-- ZMSCORE and one ZREM for the whole batch.
local live, members = {}, {}
p = first_op
for _ = 1, nops do
  local kind = ARGV[p]
  if kind == '2' or kind == '3' then members[#members + 1] = ARGV[p + 1] end
  p = p + 9 + tonumber(ARGV[p + 8])
end
if #members > 0 then
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(members))
  local gone = {}
  for i, m in ipairs(members) do
    if scores[i] and not live[m] then live[m] = true; gone[#gone + 1] = m end
  end
  if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
end

-- Level state, loaded once per key and written once at the end.
local cache = {}
local function state(ki)
  local s = cache[ki]
  if s then return s end
  local v = redis.call('HMGET', KEYS[ki], 'tw', 'tu', 'th', 'cw', 'cu', 'ch', 'tl', 'bt', 'bts', 'x')
  s = {
    tw = num(v[1], -1), tu = num(v[2], 0), th = num(v[3], 0),
    cw = num(v[4], -1), cu = num(v[5], 0), ch = num(v[6], 0),
    tl = num(v[7], nil), bt = num(v[8], nil), bts = num(v[9], nil), x = num(v[10], 0),
    keep = 0, dirty = false,
  }
  cache[ki] = s
  return s
end

-- The (window, used) of a resource now; kind 1 = periodic, else lifetime.
local function current(kind, per, w, used)
  if kind == 1 then
    local cw = math.floor(now / per)
    if w ~= cw then return cw, 0 end
    return cw, used
  end
  return 0, used
end

local function retry(kind, per)
  if kind == 1 then return per - (now % per) end
  return -1
end

local function bucket(L, s)
  return math.min(L.rcap, num(s.bt, L.rcap) + math.max(0, now - num(s.bts, now)) * L.rrate)
end

local function touch(s, L)
  s.dirty = true
  if L.keep > s.keep then s.keep = L.keep end
  if L.tkind == 2 then s.tl = L.tlim end
end

local out = {}
local zadd = {}
p = first_op
for _ = 1, nops do
  local kind, member = ARGV[p], ARGV[p + 1]
  local nl = tonumber(ARGV[p + 8])
  local l0 = p + 8
  if kind == '1' then
    local at, ac = tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4])
    local take = ARGV[p + 7] == '1'
    local refused = nil
    for i = 1, nl do
      local L = specs[tonumber(ARGV[l0 + i])]
      local s = state(L.ki)
      local _, tu = current(L.tkind, L.tper, s.tw, s.tu)
      local tl = nil
      if L.tkind == 1 or L.tkind == 2 then tl = L.tlim elseif L.tkind == 3 then tl = s.tl end
      if tl and tu + s.th + at > tl then
        refused = '0 ' .. i .. ' ' .. retry(L.tkind, L.tper) .. ' 1'; break
      end
      local _, cu = current(L.ckind, L.cper, s.cw, s.cu)
      if (L.ckind == 1 or L.ckind == 2) and cu + s.ch + ac > L.clim then
        refused = '0 ' .. i .. ' ' .. retry(L.ckind, L.cper) .. ' 2'; break
      end
      if take and L.rcap >= 0 then
        local b = bucket(L, s)
        if b < 1 then
          local r = -1
          if L.rrate > 0 then r = math.ceil((1 - b) / L.rrate) end
          refused = '0 ' .. i .. ' ' .. r .. ' 3'; break
        end
      end
    end
    if refused then
      out[#out + 1] = refused
    else
      for i = 1, nl do
        local L = specs[tonumber(ARGV[l0 + i])]
        local s = state(L.ki)
        if take and L.rcap >= 0 then s.bt, s.bts = bucket(L, s) - 1, now end
        s.tw, s.tu = current(L.tkind, L.tper, s.tw, s.tu)
        s.cw, s.cu = current(L.ckind, L.cper, s.cw, s.cu)
        s.th, s.ch = s.th + at, s.ch + ac
        touch(s, L)
      end
      zadd[#zadd + 1] = now + tonumber(ARGV[p + 2])
      zadd[#zadd + 1] = member
      out[#out + 1] = '1'
    end
  elseif kind == '2' or kind == '3' then
    -- A hold counts only while its record is in the index: one that was
    -- reclaimed has already been removed from every level. Usage is
    -- charged either way (the call happened).
    local held = live[member]
    live[member] = nil
    local ht, hc, at, ac = 0, 0, 0, 0
    if held then ht, hc = tonumber(ARGV[p + 5]), tonumber(ARGV[p + 6]) end
    if kind == '2' then at, ac = tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4]) end
    if held or kind == '2' then
      for i = 1, nl do
        local L = specs[tonumber(ARGV[l0 + i])]
        local s = state(L.ki)
        local tw, tu = current(L.tkind, L.tper, s.tw, s.tu)
        local cw, cu = current(L.ckind, L.cper, s.cw, s.cu)
        s.tw, s.tu, s.th = tw, tu + at, math.max(0, s.th - ht)
        s.cw, s.cu, s.ch = cw, cu + ac, math.max(0, s.ch - hc)
        touch(s, L)
      end
    end
    out[#out + 1] = '1'
  elseif kind == '4' then
    for i = 1, nl do
      local L = specs[tonumber(ARGV[l0 + i])]
      touch(state(L.ki), L)
    end
    out[#out + 1] = '1'
  elseif kind == '5' then
    local L = specs[tonumber(ARGV[l0 + 1])]
    local s = state(L.ki)
    local _, tu = current(L.tkind, L.tper, s.tw, s.tu)
    local _, cu = current(L.ckind, L.cper, s.cw, s.cu)
    out[#out + 1] = fmt(tu) .. ' ' .. fmt(s.th) .. ' ' .. fmt(cu) .. ' ' .. fmt(s.ch)
  else
    return redis.error_reply('unknown op')
  end
  p = l0 + nl + 1
end

for ki, s in pairs(cache) do
  if s.dirty then
    local f = {'tw', fmt(s.tw), 'tu', fmt(s.tu), 'th', fmt(s.th),
               'cw', fmt(s.cw), 'cu', fmt(s.cu), 'ch', fmt(s.ch)}
    if s.tl then f[#f + 1] = 'tl'; f[#f + 1] = fmt(s.tl) end
    if s.bt then
      f[#f + 1] = 'bt'; f[#f + 1] = tostring(s.bt)
      f[#f + 1] = 'bts'; f[#f + 1] = fmt(s.bts)
    end
    local expire = s.keep > 0 and s.x < now + s.keep - SLACK
    if expire then f[#f + 1] = 'x'; f[#f + 1] = fmt(now + s.keep) end
    redis.call('HSET', KEYS[ki], unpack(f))
    if expire then redis.call('PEXPIRE', KEYS[ki], s.keep) end
  end
end
if #zadd > 0 then redis.call('ZADD', KEYS[1], unpack(zadd)) end
return out
