-- tenant-governance Redis ledger: one script that applies a *batch* of
-- ledger operations atomically. The client sends every operation that is
-- waiting when a batch slot frees up (group commit), already grouped so
-- that the script does little per operation:
--   * settlements and releases of one instance and one set of levels are
--     summed by the client into one *adjust* (they only add usage and
--     subtract holds, so their sum is exact),
--   * reservations with the same levels form one *reserve group*: the
--     levels are named once, then each reservation is three numbers, and
--     each is checked against everything held and used so far, in order.
-- All operations of a batch are concurrent (none had an answer when the
-- batch was sent), so this order (adjusts, registrations, reservation
-- groups, usage reads) is a valid serial order.
--
-- Numbers travel packed (Redis's `struct` library): no decimal parsing or
-- formatting on the hot path. A level's state is one string key holding
-- ten little-endian doubles, read once (GET) and written once (SET with
-- PXAT) per batch:
--   tw tu th  token window, used, held
--   cw cu ch  cost window, used, held
--   tl        stored lifetime token limit (-1: none)
--   bt bts    request bucket level (-1: none yet), its timestamp (ms)
--   x         the key's expiry (ms), which only ever moves later
--
-- Holds are not stored one by one. Each ledger *instance* (a random id; a
-- process rotates to a new one now and then) has
--   * a lease: its member in the sorted set KEYS[1], scored by expiry (ms),
--     refreshed by the client every lease/3, and
--   * a hash <prefix>:held:<id> with, per level key K, the amounts its
--     outstanding holds hold there: field 't'..K (tokens), 'c'..K (cost).
-- Invariant: a level's th/ch = the sum of its fields over live instances.
-- A batch that reserves first sweeps instances whose lease expired (a
-- crashed process): their amounts are subtracted from the levels, their
-- hash deleted, their lease removed and a tombstone <prefix>:gone:<id>
-- set, so the id is never registered again. An adjust of an instance that
-- is gone charges usage only: its holds were subtracted once, by the sweep.
--
-- KEYS[1]   = lease index (sorted set: instance id -> lease expiry ms)
-- KEYS[2..] = the distinct level keys of the batch
-- ARGV[1] = lease ms, ARGV[2] = key prefix, ARGV[3] = '1' when the batch
--   reserves (then expired instances are swept),
-- ARGV[4] = instances, 18 characters each: 16 hex digits of the id, then
--   fresh ('1': may register it; the client has no reply for it yet) and
--   refresh ('1': extend its lease),
-- ARGV[5] = level specs, each '<HBddBdddd': index into KEYS, token kind
--   (0 none, 1 periodic, 2 lifetime, 3 registered), limit, period ms, cost
--   kind, limit, period ms, bucket capacity (-1: none), refill per ms,
-- ARGV[6] = operations, each starting with its kind (B):
--   1 reserve group: '<H' levels n, n x '<H' spec (1-based), '<H' count c,
--     c x '<Hdd' (instance index 1-based, tokens, cost)
--   2 adjust: '<HH' instance index, n, n x '<H' spec, '<dddd' (tokens and
--     cost to charge, tokens and cost to stop holding)
--   4 register: '<H' spec      5 usage: '<H' spec
-- ARGV[7] = the writer (the client ledger's random id, hex) of the batch's
--   deferred settlements and releases ('': the batch has none), ARGV[8] =
--   their batch number. A writer numbers these batches 1, 2, ... and sends
--   them in order, re-sending a batch whose outcome it never learnt before
--   any later one, so <prefix>:applied:<writer> (the last number applied,
--   kept a day) tells whether a batch's adjusts were applied already: then
--   they are skipped, and each is applied exactly once.
-- ARGV[9] = per level key (KEYS[2..], in order) '<d': how long to keep it
--   after this batch (ms); its expiry only ever moves later.
-- Reply: { one character per reservation, in order: '1' granted, 'L'
--   refused because its instance's lease is gone (nothing changed; the
--   client takes a new instance and retries), '0' refused;
--   for each '0', "<level> <retry ms, -1: never> <resource 1 tokens|2
--   cost|3 requests>", joined by ';';
--   per instance '1' (live) or '0' (gone), joined by ' ';
--   then per usage read "<tokens used> <held> <cost used> <held>" }

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- How long the tombstone of a swept instance is kept.
local GONE_MS = 86400000
local STATE = '<dddddddddd'

local unpack = struct.unpack
local floor, max, min = math.floor, math.max, math.min
local function fmt(x) return string.format('%.0f', x) end

local lease, prefix = tonumber(ARGV[1]), ARGV[2]
local function held_key(id) return prefix .. ':held:' .. id end
local function gone_key(id) return prefix .. ':gone:' .. id end

-- How long a writer's last applied batch number is kept.
local APPLIED_MS = 86400000
local applied_key, skip_adjusts = nil, false
if ARGV[7] ~= '' then
  applied_key = prefix .. ':applied:' .. ARGV[7]
  local last = redis.call('GET', applied_key)
  skip_adjusts = last and tonumber(last) >= tonumber(ARGV[8]) or false
end

-- Level state by key name, loaded once per batch, written once at the end.
local cache = {}
local function load(key)
  local s = cache[key]
  if s then return s end
  local v = redis.call('GET', key)
  if v then
    local a, b, c, d, e, f, g, h, i, j = unpack(STATE, v)
    s = { tw = a, tu = b, th = c, cw = d, cu = e, ch = f, tl = g, bt = h, bts = i, x = j }
  else
    s = { tw = -1, tu = 0, th = 0, cw = -1, cu = 0, ch = 0, tl = -1, bt = -1, bts = 0, x = 0,
          absent = true }
  end
  s.keep, s.dirty = 0, false
  cache[key] = s
  return s
end

-- Reclaim instances whose lease has expired (crashed processes), before
-- any level is used; only batches that reserve need to.
if ARGV[3] == '1' then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 8)
  for _, id in ipairs(expired) do
    local h = redis.call('HGETALL', held_key(id))
    for i = 1, #h, 2 do
      local f, v = h[i], tonumber(h[i + 1]) or 0
      local s = load(string.sub(f, 2))
      if not s.absent then
        if string.sub(f, 1, 1) == 'c' then s.ch = max(0, s.ch - v) else s.th = max(0, s.th - v) end
        s.dirty = true
      end
    end
    redis.call('DEL', held_key(id))
    redis.call('ZREM', KEYS[1], id)
    redis.call('SET', gone_key(id), '1', 'PX', GONE_MS)
  end
end

-- Instances of this batch: live or gone; register fresh ones, refresh.
local insts = ARGV[4]
local inst, alive = {}, {}
for i = 1, #insts / 18 do
  local o = (i - 1) * 18
  local id = string.sub(insts, o + 1, o + 16)
  local fresh, refresh = string.sub(insts, o + 17, o + 17), string.sub(insts, o + 18, o + 18)
  inst[i] = id
  local live = redis.call('ZSCORE', KEYS[1], id)
  if not live and fresh == '1' and redis.call('EXISTS', gone_key(id)) == 0 then
    live = true
    refresh = '1'
  end
  if live and refresh == '1' then redis.call('ZADD', KEYS[1], now + lease, id) end
  alive[i] = live and true or false
end

local specs = {}
do
  local s, pos = ARGV[5], 1
  while pos <= #s do
    local L = {}
    L.ki, L.tkind, L.tlim, L.tper, L.ckind, L.clim, L.cper, L.rcap, L.rrate, pos =
      unpack('<HBddBdddd', s, pos)
    L.keep = unpack('<d', ARGV[9], (L.ki - 2) * 8 + 1)
    if L.tkind == 1 or L.tkind == 2 then L.tl = L.tlim end
    if L.ckind == 1 or L.ckind == 2 then L.cl = L.clim end
    specs[#specs + 1] = L
  end
end

-- A spec's level state, brought to `now` once per batch: a periodic
-- window that has passed starts over, the bucket refills.
local function prep(L)
  local s = L.s
  if s then return s end
  s = load(KEYS[L.ki])
  if L.tkind == 1 then
    local w = floor(now / L.tper)
    if s.tw ~= w then s.tw, s.tu = w, 0 end
  end
  if L.ckind == 1 then
    local w = floor(now / L.cper)
    if s.cw ~= w then s.cw, s.cu = w, 0 end
  end
  if L.rcap >= 0 then
    local b = L.rcap
    if s.bt >= 0 then b = min(L.rcap, s.bt + max(0, now - s.bts) * L.rrate) end
    s.bt, s.bts = b, now
  end
  L.s = s
  return s
end

local function touch(L)
  local s = L.s
  s.dirty = true
  if L.keep > s.keep then s.keep = L.keep end
  if L.tkind == 2 then s.tl = L.tlim end
end

local function retry(kind, per)
  if kind == 1 then return per - (now % per) end
  return -1
end

-- Net change of each instance's held amounts per level key, this batch.
local dheld = {}
local function add_held(ii, key, dt, dc)
  local d = dheld[ii]
  if not d then d = {}; dheld[ii] = d end
  local e = d[key]
  if not e then e = { 0, 0 }; d[key] = e end
  e[1], e[2] = e[1] + dt, e[2] + dc
end

local ops, pos = ARGV[6], 1
local status, refusals, usages = {}, {}, {}

local function levels(n)
  local ls = {}
  for i = 1, n do
    local si
    si, pos = unpack('<H', ops, pos)
    local L = specs[si]
    prep(L)
    ls[i] = L
  end
  return ls
end

while pos <= #ops do
  local kind
  kind, pos = unpack('<B', ops, pos)
  if kind == 1 then
    local n, c
    n, pos = unpack('<H', ops, pos)
    local ls = levels(n)
    c, pos = unpack('<H', ops, pos)
    local sumt, sumc = {}, {}
    for _ = 1, c do
      local ii, at, ac
      ii, at, ac, pos = unpack('<Hdd', ops, pos)
      local verdict = '1'
      if not alive[ii] then
        verdict = 'L'
      else
        for i = 1, n do
          local L = ls[i]
          local s = L.s
          local tl = L.tl
          if L.tkind == 3 and s.tl >= 0 then tl = s.tl end
          if tl and s.tu + s.th + at > tl then
            verdict = '0'
            refusals[#refusals + 1] = i .. ' ' .. retry(L.tkind, L.tper) .. ' 1'
            break
          end
          if L.cl and s.cu + s.ch + ac > L.cl then
            verdict = '0'
            refusals[#refusals + 1] = i .. ' ' .. retry(L.ckind, L.cper) .. ' 2'
            break
          end
          if L.rcap >= 0 and s.bt < 1 then
            local r = -1
            if L.rrate > 0 then r = math.ceil((1 - s.bt) / L.rrate) end
            verdict = '0'
            refusals[#refusals + 1] = i .. ' ' .. r .. ' 3'
            break
          end
        end
        if verdict == '1' then
          for i = 1, n do
            local L = ls[i]
            local s = L.s
            s.th, s.ch = s.th + at, s.ch + ac
            if L.rcap >= 0 then s.bt = s.bt - 1 end
          end
          sumt[ii] = (sumt[ii] or 0) + at
          sumc[ii] = (sumc[ii] or 0) + ac
        end
      end
      status[#status + 1] = verdict
    end
    for ii, st in pairs(sumt) do
      for i = 1, n do
        local L = ls[i]
        touch(L)
        add_held(ii, KEYS[L.ki], st, sumc[ii])
      end
    end
  elseif kind == 2 then
    local ii, n
    ii, n, pos = unpack('<HH', ops, pos)
    local ls = levels(n)
    local ut, uc, ht, hc
    ut, uc, ht, hc, pos = unpack('<dddd', ops, pos)
    -- A hold counts only while its instance is live: a gone instance's
    -- amounts were subtracted when it was swept. Usage is charged either
    -- way (the call happened).
    local held = alive[ii]
    if not held then ht, hc = 0, 0 end
    if not skip_adjusts and (ut ~= 0 or uc ~= 0 or ht ~= 0 or hc ~= 0) then
      for i = 1, n do
        local L = ls[i]
        local s = L.s
        s.tu, s.th = s.tu + ut, max(0, s.th - ht)
        s.cu, s.ch = s.cu + uc, max(0, s.ch - hc)
        touch(L)
        if held then add_held(ii, KEYS[L.ki], -ht, -hc) end
      end
    end
  elseif kind == 4 then
    local L = levels(1)[1]
    touch(L)
  elseif kind == 5 then
    local s = levels(1)[1].s
    usages[#usages + 1] = fmt(s.tu) .. ' ' .. fmt(s.th) .. ' ' .. fmt(s.cu) .. ' ' .. fmt(s.ch)
  else
    return redis.error_reply('unknown ledger operation')
  end
end

for key, s in pairs(cache) do
  if s.dirty then
    local x = max(s.x, now + s.keep)
    local v = struct.pack(STATE, s.tw, s.tu, s.th, s.cw, s.cu, s.ch, s.tl, s.bt, s.bts, x)
    if x > now then
      redis.call('SET', key, v, 'PXAT', fmt(x))
    else
      redis.call('SET', key, v, 'KEEPTTL')
    end
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
  for key, e in pairs(d) do
    apply_held(hk, 't' .. key, e[1])
    apply_held(hk, 'c' .. key, e[2])
  end
end

if applied_key and not skip_adjusts then
  redis.call('SET', applied_key, ARGV[8], 'PX', APPLIED_MS)
end

local live = {}
for i = 1, #inst do live[i] = alive[i] and '1' or '0' end
local out = { table.concat(status), table.concat(refusals, ';'), table.concat(live, ' ') }
for i = 1, #usages do out[#out + 1] = usages[i] end
return out
