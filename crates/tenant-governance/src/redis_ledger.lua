-- tenant-governance Redis ledger: one script that applies a *batch* of
-- ledger operations atomically, in order. The client sends every operation
-- that is waiting when the previous batch returns (group commit), so under
-- concurrency one script call carries many reservations and settlements,
-- and each level key is read once (HMGET) and written once (HSET) per
-- batch, however many operations touch it. Every operation still sees the
-- effects of the ones before it, exactly as if each ran as its own script:
-- a reservation is checked against everything held and used so far.
--
-- Holds are not stored one by one. Each ledger *instance* (a random id; a
-- process rotates to a new one now and then) has
--   * a lease: its member in the sorted set KEYS[1], scored by expiry (ms),
--     refreshed by the client every lease/3, and
--   * a hash <prefix>:held:<id> with, per level key K, the amounts its
--     outstanding holds hold there: field 't'..K (tokens), 'c'..K (cost).
-- Invariant: a level's th/ch = the sum of its fields over live instances.
-- A batch first sweeps instances whose lease expired (a crashed process):
-- their amounts are subtracted from the levels, their hash deleted, their
-- lease removed and a tombstone <prefix>:gone:<id> set, so the id is never
-- registered again. A settle or release of a hold whose instance is gone
-- charges usage only: its amount has already been subtracted, exactly once.
--
-- KEYS[1]   = lease index (sorted set: instance id -> lease expiry ms)
-- KEYS[2..] = the distinct level keys of the batch (one hash each)
-- ARGV[1] = number of level specs S, ARGV[2] = number of operations,
-- ARGV[3] = lease ms, ARGV[4] = key prefix, ARGV[5] = number of instances I,
-- ARGV[6] = 1 when the batch reserves (then expired instances are swept);
-- then I instances of 3 values: id, fresh (1: may register it; the client
--   has no reply for it yet), refresh (1: extend its lease);
-- then S specs of NS values: index into KEYS, token kind, limit, period,
--   cost kind, limit, period, bucket capacity (-1: none), refill per ms,
--   retention ms (each distinct spec is sent once per batch);
-- then per operation: kind (1 reserve, 2 settle, 3 release, 4 register,
--   5 usage, 6 nothing: lease refresh only), instance index (0: none),
--   tokens, cost (to hold at reserve, to charge at settle), held tokens,
--   held cost (settle and release: the hold's own amount), take a request
--   (1/0), number of levels, then one spec index (1-based) per level.
-- Reply: one string per operation: '1' (done), 'L' (reservation refused
-- because its instance's lease is gone: nothing changed, the client takes
-- a new instance and retries), "0 <level> <retry ms, -1: never>
-- <resource 1 tokens|2 cost|3 requests>" for a refused reservation, or
-- "<tokens used> <held> <cost used> <held>" for usage; then one more
-- string: per instance '1' (live) or '0' (gone), space-separated.
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
-- How long the tombstone of a swept instance is kept.
local GONE_MS = 86400000

local function fmt(x) return string.format('%.0f', x) end
local function num(x, d) if x then return tonumber(x) end return d end

local nspecs, nops = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, prefix, ninst = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local function held_key(id) return prefix .. ':held:' .. id end
local function gone_key(id) return prefix .. ':gone:' .. id end

-- Reclaim instances whose lease has expired (crashed processes), before
-- any level is loaded; only batches that reserve need to (ARGV[6]).
local expired = {}
if ARGV[6] == '1' then
  expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 8)
end
for _, id in ipairs(expired) do
  local h = redis.call('HGETALL', held_key(id))
  for i = 1, #h, 2 do
    local f, v = h[i], tonumber(h[i + 1]) or 0
    local field = 'th'
    if string.sub(f, 1, 1) == 'c' then field = 'ch' end
    local key = string.sub(f, 2)
    local cur = redis.call('HGET', key, field)
    if cur then redis.call('HSET', key, field, fmt(math.max(0, tonumber(cur) - v))) end
  end
  redis.call('DEL', held_key(id))
  redis.call('ZREM', KEYS[1], id)
  redis.call('SET', gone_key(id), '1', 'PX', GONE_MS)
end

-- Instances of this batch: live or gone; register fresh ones, refresh.
local inst, alive = {}, {}
local p = 7
for i = 1, ninst do
  local id, fresh, refresh = ARGV[p], ARGV[p + 1], ARGV[p + 2]
  inst[i] = id
  local live = redis.call('ZSCORE', KEYS[1], id)
  if not live and fresh == '1' and redis.call('EXISTS', gone_key(id)) == 0 then
    live = true
    refresh = '1'
  end
  if live and refresh == '1' then redis.call('ZADD', KEYS[1], now + lease, id) end
  alive[i] = live and true or false
  p = p + 3
end

local specs = {}
for i = 1, nspecs do
  specs[i] = {
    ki = tonumber(ARGV[p]),
    tkind = tonumber(ARGV[p + 1]), tlim = tonumber(ARGV[p + 2]), tper = tonumber(ARGV[p + 3]),
    ckind = tonumber(ARGV[p + 4]), clim = tonumber(ARGV[p + 5]), cper = tonumber(ARGV[p + 6]),
    rcap = tonumber(ARGV[p + 7]), rrate = tonumber(ARGV[p + 8]), keep = tonumber(ARGV[p + 9]),
  }
  p = p + NS
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

-- Net change of each instance's held amounts per level key, this batch.
local dheld = {}
local function add_held(ii, ki, dt, dc)
  local d = dheld[ii]
  if not d then d = {}; dheld[ii] = d end
  local e = d[ki]
  if not e then e = {0, 0}; d[ki] = e end
  e[1], e[2] = e[1] + dt, e[2] + dc
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
for _ = 1, nops do
  local kind, ii = ARGV[p], tonumber(ARGV[p + 1])
  local nl = tonumber(ARGV[p + 7])
  local l0 = p + 7
  if kind == '1' then
    local at, ac = tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
    local take = ARGV[p + 6] == '1'
    local refused = nil
    if not alive[ii] then refused = 'L' end
    for i = 1, nl do
      if refused then break end
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
        add_held(ii, L.ki, at, ac)
      end
      out[#out + 1] = '1'
    end
  elseif kind == '2' or kind == '3' then
    -- A hold counts only while its instance is live: a gone instance's
    -- amounts were subtracted when it was swept. Usage is charged either
    -- way (the call happened).
    local held = alive[ii]
    local ht, hc, at, ac = 0, 0, 0, 0
    if held then ht, hc = tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5]) end
    if kind == '2' then at, ac = tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3]) end
    if held or kind == '2' then
      for i = 1, nl do
        local L = specs[tonumber(ARGV[l0 + i])]
        local s = state(L.ki)
        local tw, tu = current(L.tkind, L.tper, s.tw, s.tu)
        local cw, cu = current(L.ckind, L.cper, s.cw, s.cu)
        s.tw, s.tu, s.th = tw, tu + at, math.max(0, s.th - ht)
        s.cw, s.cu, s.ch = cw, cu + ac, math.max(0, s.ch - hc)
        touch(s, L)
        if held then add_held(ii, L.ki, -ht, -hc) end
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
  elseif kind == '6' then
    out[#out + 1] = '1'
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

-- Per instance and level: HINCRBY of the net change (nothing when a hold
-- was reserved and ended in the same batch); a field back at 0 is removed.
local function apply_held(hk, field, d)
  if d ~= 0 then
    if redis.call('HINCRBY', hk, field, fmt(d)) <= 0 then redis.call('HDEL', hk, field) end
  end
end
for ii, d in pairs(dheld) do
  local hk = held_key(inst[ii])
  for ki, e in pairs(d) do
    apply_held(hk, 't' .. KEYS[ki], e[1])
    apply_held(hk, 'c' .. KEYS[ki], e[2])
  end
end

local live = {}
for i = 1, ninst do live[i] = alive[i] and '1' or '0' end
out[#out + 1] = table.concat(live, ' ')
return out
