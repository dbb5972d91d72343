-- tenant-governance Redis ledger: one script that applies a *batch* of
-- ledger operations atomically, for one key group (the whole keyspace on a
-- single server; one hash-tagged group, hence one slot, on a cluster).
--
-- The client sends every operation waiting when a batch slot frees up
-- (group commit), already grouped so that the script does little per
-- operation:
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
-- All or nothing. The script runs in two phases. The first only reads: it
-- decodes each operation, validates it and applies it to the level state
-- loaded in memory, and collects every write; an operation that is invalid
-- (a number that is not a whole number in [0, 2^53 - 1], an index out of
-- range) is skipped on its own and reported, so it cannot change, strand
-- or double-charge anything of another operation, and a batch that cannot
-- be decoded at all ends the script before anything was written. The
-- second phase writes, with commands that cannot fail on the values the
-- first computed. (Out of memory, Redis refuses a script's first write and
-- then lets it finish, so it cannot stop one half-way either.)
--
-- Numbers travel packed (Redis's `struct` library). A level's state is one
-- string key holding twelve little-endian doubles, read once (GET) and
-- written once (SET with PXAT) per batch:
--   tw tu th tp  token window, used, held, period (ms; 0: lifetime)
--   cw cu ch cp  the same for cost
--   tl           the context's own pool: -1 unregistered, -2 unlimited,
--                else its lifetime token budget
--   bt bts       request bucket level (-1: none yet), its timestamp (ms)
--   x            the key's expiry (ms), which only ever moves later
-- Used counters saturate at MAX = 2^53 - 1; a reservation that would hold
-- more than MAX at a level is refused (resource 5). Every value therefore
-- stays an integer a double holds exactly.
--
-- Holds are not stored one by one. Each ledger *instance* (a random id; a
-- process rotates to a new one now and then) has, in this group,
--   * a lease: its member in the sorted set KEYS[1], scored by expiry (ms),
--     refreshed by the client every lease/3 while it holds something here,
--   * a hash <group>:held:<id> with, per level key K, the amounts its
--     outstanding holds hold there: field 't'..K (tokens), 'c'..K (cost).
-- Invariant: a level's th/ch = the sum of its fields over the instances
-- holding in the group. Instances whose lease expired (a process that
-- crashed, or stalled past its lease) are swept: their held amounts are
-- CHARGED, moved from held to used, so crashing or stalling never gives
-- budget back. A batch sweeps up to 8 of them when the client asks (batches
-- that read usage, and reserving batches every lease/3), and always sweeps
-- an expired instance it names. Until it is swept an expired instance's
-- holds still count as held, so sweeping late never admits more. A swept
-- instance's hash and lease are deleted and a tombstone <group>:gone:<id>
-- set, so the id never holds here again. A late settlement of a swept hold adds only what the usage
-- exceeds the hold by (the hold was charged in full). An instance whose
-- hash becomes empty gives up its lease.
--
-- KEYS[1]   = this group's lease index (instance id -> lease expiry ms)
-- KEYS[2..] = the distinct level keys of the batch
-- ARGV[1] = lease ms, ARGV[2] = the group's key prefix, ARGV[3] = '1' to
--   sweep up to 8 expired instances,
-- ARGV[4] = instances, 17 characters each: 16 hex digits of the id, then
--   '1' to extend its lease,
-- ARGV[5] = level specs, each '<HBddBdddd': index into KEYS, token kind
--   (0 none, 1 periodic, 2 lifetime, 3 registered, 4 lifetime unlimited),
--   limit, period ms, cost kind (0 none, 1 periodic, 2 lifetime), limit,
--   period ms, bucket capacity (-1: none), refill per ms,
-- ARGV[6] = operations, each starting with its kind (B):
--   1 reserve group: '<H' levels n, n x '<H' spec (1-based), '<H' count c,
--     c x '<Hdd' (instance index 1-based, tokens, cost)
--   2 adjust: '<HH' instance index (0: none), n, n x '<H' spec, '<dddddd':
--     tokens and cost to charge, tokens and cost to stop holding, tokens
--     and cost the usage exceeds the holds by
--   4 register: '<H' spec      5 usage: '<H' spec
-- ARGV[7] = the writer (the client ledger's random id, hex) of the batch's
--   settlements and releases ('': the batch has none), ARGV[8] = their
--   batch number. A writer numbers these batches 1, 2, ... and sends them
--   in order, re-sending a batch whose outcome it never learnt before any
--   later one, so <group>:applied:<writer> (the last number applied, kept
--   a day) tells whether a batch's adjusts were applied already: then they
--   are skipped, and each is applied exactly once.
-- ARGV[9] = per level key (KEYS[2..], in order) '<d': how long to keep it
--   after this batch (ms); its expiry only ever moves later.
-- Reply: { one character per reservation, in order: '1' granted, 'L'
--   refused because its instance is gone (nothing changed; the client takes
--   a new instance and retries), '0' refused, 'X' invalid;
--   for each '0', "<level> <retry ms, -1: never> <resource>" (1 tokens,
--   2 cost, 3 requests, 4 unregistered ancestor, 5 beyond MAX), joined by
--   ';';
--   per instance, joined by ' ': '1' live, 'E' live with its lease
--   extended by this batch, '0' gone (swept), '-' holds nothing here;
--   the number of invalid operations skipped;
--   then per usage read "<tokens used> <held> <cost used> <held>" ('X'
--   for an invalid one) }
-- A batch that cannot be decoded at all changes nothing and returns
-- { 'malformed', <reason> }.

local MAX = 9007199254740991
local GONE_MS, APPLIED_MS = 86400000, 86400000
local STATE = '<dddddddddddd'
local unpack = struct.unpack
local floor, max, min = math.floor, math.max, math.min
local function fmt(x) return string.format('%.0f', x) end
-- A whole number in [0, MAX] (false for NaN and infinities too).
local function whole(x) return x >= 0 and x <= MAX and x % 1 == 0 end

local lease, gprefix = tonumber(ARGV[1]), ARGV[2]
if not (lease and whole(lease) and lease >= 1) then return { 'malformed', 'lease' } end
local function held_key(id) return gprefix .. ':held:' .. id end
local function gone_key(id) return gprefix .. ':gone:' .. id end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)

-- Level state by key name, loaded once per batch, written once at the end.
local cache = {}
local function load(key)
  local s = cache[key]
  if s then return s end
  local v = redis.call('GET', key)
  if v and #v == 96 then
    local a, b, c, d, e, f, g, h, i, j, k, l = unpack(STATE, v)
    s = { tw = a, tu = b, th = c, tp = d, cw = e, cu = f, ch = g, cp = h, tl = i, bt = j,
          bts = k, x = l }
  else
    s = { tw = -1, tu = 0, th = 0, tp = 0, cw = -1, cu = 0, ch = 0, cp = 0, tl = -1, bt = -1,
          bts = 0, x = 0, absent = true }
  end
  s.keep, s.dirty = 0, false
  cache[key] = s
  return s
end

-- A counter (fields window `wf`, used `uf`) brought to `now`: a periodic
-- counter whose period has passed starts over.
local function roll(s, wf, uf, per)
  if per > 0 then
    local w = floor(now / per)
    if s[wf] ~= w then s[wf], s[uf] = w, 0 end
  end
end

-- Writes collected by the first phase.
local swept, is_swept, extend = {}, {}, {}

-- Charges an expired instance's holds (crashed or stalled processes): its
-- holds are charged, never forgotten. Once per batch.
local function sweep(id)
  if is_swept[id] then return end
  is_swept[id] = true
  local h = redis.call('HGETALL', held_key(id))
  for i = 1, #h, 2 do
    local f, v = h[i], tonumber(h[i + 1]) or 0
    local s = load(string.sub(f, 2))
    if not s.absent and v > 0 then
      if string.sub(f, 1, 1) == 'c' then
        roll(s, 'cw', 'cu', s.cp)
        s.ch, s.cu = max(0, s.ch - v), min(MAX, s.cu + v)
      else
        roll(s, 'tw', 'tu', s.tp)
        s.th, s.tu = max(0, s.th - v), min(MAX, s.tu + v)
      end
      s.dirty = true
    end
  end
  swept[#swept + 1] = id
end

local insts = ARGV[4]
local ninst = floor(#insts / 17)
local inst, state, registered = {}, {}, {}
local function live(ii) return state[ii] == '1' or state[ii] == 'E' end

local status, refusals, usages = {}, {}, {}
local invalid = 0
local applied_key, skip_adjusts = nil, false
-- Net change of each instance's held amounts per level key, this batch.
local dheld = {}
local function add_held(ii, key, dt, dc)
  local d = dheld[ii]
  if not d then d = {}; dheld[ii] = d end
  local e = d[key]
  if not e then e = { 0, 0 }; d[key] = e end
  e[1], e[2] = e[1] + dt, e[2] + dc
end

local function retry(kind, per)
  if kind == 1 then return per - (now % per) end
  return -1
end

-- A spec's level state, brought to `now` once per batch: a periodic window
-- that has passed starts over, the bucket refills.
local function prep(L)
  local s = L.s
  if s then return s end
  s = load(KEYS[L.ki])
  if L.tkind == 1 then roll(s, 'tw', 'tu', L.tper) end
  if L.ckind == 1 then roll(s, 'cw', 'cu', L.cper) end
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
  if L.tkind == 1 then s.tp = L.tper elseif L.tkind ~= 0 then s.tp = 0 end
  if L.ckind == 1 then s.cp = L.cper elseif L.ckind ~= 0 then s.cp = 0 end
  if L.tkind == 2 then s.tl = L.tlim elseif L.tkind == 4 then s.tl = -2 end
end

-- Why level L (the i-th of its operation) refuses a hold of (at, ac), or
-- nil.
local function refusal(i, L, at, ac)
  local s = L.s
  if s.th + at > MAX or s.ch + ac > MAX then return i .. ' -1 5' end
  local tl = L.tl
  if L.tkind == 3 then
    if s.tl == -1 then return i .. ' -1 4' end
    if s.tl >= 0 then tl = s.tl end
  end
  if tl and s.tu + s.th + at > tl then return i .. ' ' .. retry(L.tkind, L.tper) .. ' 1' end
  if L.cl and s.cu + s.ch + ac > L.cl then return i .. ' ' .. retry(L.ckind, L.cper) .. ' 2' end
  if L.rcap >= 0 and s.bt < 1 then
    local r = -1
    if L.rrate > 0 then r = math.ceil((1 - s.bt) / L.rrate) end
    return i .. ' ' .. r .. ' 3'
  end
  return nil
end

-- Phase 1: read, decode, validate and apply in memory. No writes; a
-- malformed batch ends here with nothing written.
local decoded, why = pcall(function()
  if #insts ~= ninst * 17 then error('instances') end
  if ARGV[7] ~= '' then
    applied_key = gprefix .. ':applied:' .. ARGV[7]
    local last = redis.call('GET', applied_key)
    skip_adjusts = last and tonumber(last) >= tonumber(ARGV[8]) or false
  end
  if ARGV[3] == '1' then
    local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 8)
    for _, id in ipairs(expired) do sweep(id) end
  end
  -- Instances: live ('1'; 'E' once its lease is extended), gone ('0') or
  -- holding nothing here ('-'). An expired one not swept yet is swept now.
  for i = 1, ninst do
    local o = (i - 1) * 17
    local id = string.sub(insts, o + 1, o + 16)
    inst[i] = id
    local st = '-'
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and (is_swept[id] or tonumber(score) < now) then
      sweep(id)
      score = nil
    end
    if score then
      st = '1'
      if string.sub(insts, o + 17, o + 17) == '1' then
        extend[i] = true
        st = 'E'
      end
    elseif is_swept[id] or redis.call('EXISTS', gone_key(id)) == 1 then
      st = '0'
    end
    state[i] = st
  end

  local specs = {}
  local s, pos = ARGV[5], 1
  while pos <= #s do
    local L = {}
    L.ki, L.tkind, L.tlim, L.tper, L.ckind, L.clim, L.cper, L.rcap, L.rrate, pos =
      unpack('<HBddBdddd', s, pos)
    L.ok = L.ki >= 2 and L.ki <= #KEYS and L.tkind <= 4 and L.ckind <= 2
      and whole(L.tlim) and whole(L.tper) and L.tper >= 1
      and whole(L.clim) and whole(L.cper) and L.cper >= 1
      and (L.rcap == -1 or (whole(L.rcap) and L.rcap <= 4294967295))
      and L.rrate >= 0 and L.rrate < math.huge
    if L.ok then
      L.keep = unpack('<d', ARGV[9], (L.ki - 2) * 8 + 1)
      L.ok = whole(L.keep)
    end
    if L.tkind == 1 or L.tkind == 2 then L.tl = L.tlim end
    if L.ckind == 1 or L.ckind == 2 then L.cl = L.clim end
    specs[#specs + 1] = L
  end

  -- The operations, in the order the client sent them: adjusts,
  -- registrations, reservation groups, usage reads (see the header).
  local o = ARGV[6]
  pos = 1
  local function levels()
    local n
    n, pos = unpack('<H', o, pos)
    local ls, ok = {}, true
    for i = 1, n do
      local si
      si, pos = unpack('<H', o, pos)
      local L = specs[si]
      if L and L.ok then prep(L) else ok = false end
      ls[i] = L
    end
    return ls, ok
  end
  while pos <= #o do
    local kind
    kind, pos = unpack('<B', o, pos)
    if kind == 1 then
      local ls, ok = levels()
      local n, c = #ls, nil
      c, pos = unpack('<H', o, pos)
      local sumt, sumc = {}, {}
      for _ = 1, c do
        local ii, at, ac
        ii, at, ac, pos = unpack('<Hdd', o, pos)
        local verdict = '1'
        if not (ok and ii >= 1 and ii <= ninst and whole(at) and whole(ac)) then
          verdict = 'X'
          invalid = invalid + 1
        elseif state[ii] == '0' then
          verdict = 'L'
        else
          for i = 1, n do
            local why = refusal(i, ls[i], at, ac)
            if why then
              verdict = '0'
              refusals[#refusals + 1] = why
              break
            end
          end
          if verdict == '1' then
            if state[ii] == '-' then
              state[ii] = 'E'
              registered[ii] = true
            end
            for i = 1, n do
              local L = ls[i]
              local st = L.s
              st.th, st.ch = st.th + at, st.ch + ac
              if L.rcap >= 0 then st.bt = st.bt - 1 end
              touch(L)
            end
            sumt[ii] = (sumt[ii] or 0) + at
            sumc[ii] = (sumc[ii] or 0) + ac
          end
        end
        status[#status + 1] = verdict
      end
      for ii, st in pairs(sumt) do
        for i = 1, n do add_held(ii, KEYS[ls[i].ki], st, sumc[ii]) end
      end
    elseif kind == 2 then
      local ii
      ii, pos = unpack('<H', o, pos)
      local ls, ok = levels()
      local ut, uc, ht, hc, ot, oc
      ut, uc, ht, hc, ot, oc, pos = unpack('<dddddd', o, pos)
      if not (ok and ii <= ninst and whole(ut) and whole(uc) and whole(ht) and whole(hc)
          and whole(ot) and whole(oc)) then
        invalid = invalid + 1
      elseif not skip_adjusts then
        -- A live instance's holds end here. A gone instance's holds were
        -- charged in full when it was swept: only the excess is added.
        -- With no instance (a charge without a hold) the usage is charged
        -- as it is.
        local held = ii > 0 and live(ii)
        if not held then
          ht, hc = 0, 0
          if ii > 0 and state[ii] == '0' then ut, uc = ot, oc end
        end
        if ut ~= 0 or uc ~= 0 or ht ~= 0 or hc ~= 0 then
          for i = 1, #ls do
            local L = ls[i]
            local st = L.s
            st.tu, st.th = min(MAX, st.tu + ut), max(0, st.th - ht)
            st.cu, st.ch = min(MAX, st.cu + uc), max(0, st.ch - hc)
            touch(L)
            if held then add_held(ii, KEYS[L.ki], -ht, -hc) end
          end
        end
      end
    elseif kind == 4 or kind == 5 then
      local si
      si, pos = unpack('<H', o, pos)
      local L = specs[si]
      if not (L and L.ok) then
        invalid = invalid + 1
        if kind == 5 then usages[#usages + 1] = 'X' end
      elseif kind == 4 then
        prep(L)
        touch(L)
      else
        local st = prep(L)
        usages[#usages + 1] = fmt(st.tu) .. ' ' .. fmt(st.th) .. ' ' .. fmt(st.cu) .. ' ' .. fmt(st.ch)
      end
    else
      error('operation kind')
    end
  end
end)
if not decoded then return { 'malformed', tostring(why) } end

-- Phase 2: write.
for _, id in ipairs(swept) do
  redis.call('DEL', held_key(id))
  redis.call('ZREM', KEYS[1], id)
  redis.call('SET', gone_key(id), '1', 'PX', GONE_MS)
end
for i in pairs(extend) do redis.call('ZADD', KEYS[1], now + lease, inst[i]) end
for i in pairs(registered) do redis.call('ZADD', KEYS[1], now + lease, inst[i]) end

for key, s in pairs(cache) do
  if s.dirty then
    local x = max(s.x, now + s.keep)
    local v = struct.pack(STATE, s.tw, s.tu, s.th, s.tp, s.cw, s.cu, s.ch, s.cp, s.tl, s.bt,
      s.bts, x)
    if x > now then
      redis.call('SET', key, v, 'PXAT', fmt(x))
    else
      redis.call('SET', key, v, 'KEEPTTL')
    end
  end
end

-- Per instance and level: HINCRBY of the net change (nothing when a hold
-- was reserved and ended in the same batch); a field back at 0 is removed.
-- An instance that lost a field, or was registered by this batch, may hold
-- nothing here any more, and then gives up its lease.
local maybe_empty = registered
local function apply_held(ii, hk, field, d)
  if d ~= 0 then
    if redis.call('HINCRBY', hk, field, fmt(d)) <= 0 then
      redis.call('HDEL', hk, field)
      maybe_empty[ii] = true
    end
  end
end
for ii, d in pairs(dheld) do
  local hk = held_key(inst[ii])
  for key, e in pairs(d) do
    apply_held(ii, hk, 't' .. key, e[1])
    apply_held(ii, hk, 'c' .. key, e[2])
  end
end
for i in pairs(maybe_empty) do
  if live(i) and redis.call('EXISTS', held_key(inst[i])) == 0 then
    redis.call('ZREM', KEYS[1], inst[i])
    state[i] = '-'
  end
end

if applied_key and not skip_adjusts then
  redis.call('SET', applied_key, ARGV[8], 'PX', APPLIED_MS)
end

local out = { table.concat(status), table.concat(refusals, ';'), table.concat(state, ' '),
  tostring(invalid) }
for i = 1, #usages do out[#out + 1] = usages[i] end
return out
