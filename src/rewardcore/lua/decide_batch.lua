-- decide_batch: step 2 of a batch, the sequencer. Walks the batch's items that need the
-- campaign's decision state, in the batch's order, by exactly the rules of DESIGN.md:
-- beneficiary caps, the region's rank, slot choice (smallest released slot, else the next
-- never-used one, else sold out), budget, award; revoke on close (a released slot goes
-- back under on_close = "release"); confirm on complete; redeem. All reads come first,
-- then the walk in Lua tables, then the writes: a refused or failed call changes nothing.
--
-- Idempotent by call id: every candidate was recorded in its bucket as "sent in call X"
-- (step 1), and X, once applied, is marked applied here. An item that refers to another
-- call X (a redelivery, or a retry after a failure) changes nothing when X was applied;
-- else it cancels X (X, if it still arrives, changes nothing and its client redoes it as
-- references) and decides the order now, leaving a note so that it is decided only once.
--
-- KEYS[1] regions       (hash code -> "used|rank|taken|released slots a,b ascending")
-- KEYS[2] claims        (hash order id -> "code|slot|points|state|rank|ts|settled_ts|
--                        revoked_ts|beneficiary", state p pending, c confirmed, r revoked)
-- KEYS[3] beneficiaries (hash who -> "pending|confirmed|redeemed|held|code:n,code:n",
--                        points; held = non-revoked claims; per-region holdings when capped)
-- KEYS[4] scalars       (hash: spent = points of non-revoked claims; outcome code -> count
--                        of placed events decided here)
-- KEYS[5] calls         (hash call id -> 1 applied, 0 cancelled)
-- KEYS[6] notes         (hash order id -> NOTE_*, for orders of cancelled calls)
-- KEYS[7] stock taken   (hash prize id -> units)
-- KEYS[8] redemptions   (hash redemption id -> "outcome|points")
-- ARGV[1] this call's id
-- ARGV[2] "budget|cap|region cap|releases 0/1|settles on placed 0/1" (points, claims)
-- ARGV[3] the call's regions, MessagePack flat array, 3 per region: code (string), slots,
--         tiers "upto:points,upto:points"; items name a region by its position (1-based)
-- ARGV[4] the items, MessagePack flat array (ts as strings: they are only stored, and
--         text needs no number formatting; Lua numbers are doubles):
--   CORE_PLACED oid, who, region, ts: a new candidate
--   CORE_PLACED_AGAIN oid, who, region, ts, early completion ('' none), ref ('' this call):
--     a candidate completed before it was placed, or one sent before in call <ref>
--   CORE_CLOSED / CORE_COMPLETED oid, ts, ref
--   CORE_REDEEM redemption id, who, prize, qty, unit cost (-1 unknown prize), stock
-- Reply: MessagePack flat array, 4 per item: outcome, slot, points, rank; or
--   {CALL_CANCELLED} / {CALL_REPEATED} when this call id was seen before.
local call = ARGV[1]
local b_, c_, rc_, rel_, onp_ = string.match(ARGV[2], '^(%d+)|(%d+)|(%d+)|(%d)|(%d)$')
local budget, cap, region_cap = tonumber(b_), tonumber(c_), tonumber(rc_)
local releases, on_placed = rel_ == '1', onp_ == '1'

local seen_call = redis.call('HGET', KEYS[5], call)
if seen_call then
  return cmsgpack.pack({seen_call == '0' and CALL_CANCELLED or CALL_REPEATED})
end

local regs = cmsgpack.unpack(ARGV[3])
local it = cmsgpack.unpack(ARGV[4])
local nit = #it
local CHUNK = 2000  -- unpack() is bounded by Lua's C stack
-- number -> decimal text, memoized: formatting a number costs ~0.4 us here and the same
-- small numbers (slots, points, ranks, counts) recur across the call's records
local S = setmetatable({}, {__index = function(t, n)
  local s = string.format('%d', n); t[n] = s; return s
end})

local function hmget(key, fields)
  local out = {}
  for first = 1, #fields, CHUNK do
    local part = {}
    for j = first, math.min(#fields, first + CHUNK - 1) do part[#part + 1] = fields[j] end
    local got = redis.call('HMGET', key, unpack(part))
    for j = 1, #part do out[part[j]] = got[j] or nil end
  end
  return out
end
local function hset(key, map)
  local put = {}
  for f, v in pairs(map) do
    put[#put + 1] = f; put[#put + 1] = v
    if #put >= 2 * CHUNK then redis.call('HSET', key, unpack(put)); put = {} end
  end
  if #put > 0 then redis.call('HSET', key, unpack(put)) end
end
local function set_of(list) local l = {}; for k in pairs(list) do l[#l + 1] = k end; return l end

-- pass 1: what the items need
local refs, whos, cd_ids, rids, prizes = {}, {}, {}, {}, {}
local p = 1
while p <= nit do
  local k = it[p]
  if k == CORE_PLACED then
    whos[it[p + 2]] = true
    p = p + 5
  elseif k == CORE_PLACED_AGAIN then
    whos[it[p + 2]] = true
    if it[p + 6] ~= '' then refs[it[p + 6]] = true end
    p = p + 7
  elseif k == CORE_REDEEM then
    rids[it[p + 1]] = true; whos[it[p + 2]] = true; prizes[it[p + 3]] = true
    p = p + 7
  else
    cd_ids[it[p + 1]] = true
    if it[p + 3] ~= '' then refs[it[p + 3]] = true end
    p = p + 4
  end
end

-- reads, all before the first write
local applied = {}
for ref, v in pairs(hmget(KEYS[5], set_of(refs))) do applied[ref] = v == '1' end
local note_ids = {}
p = 1
while p <= nit do
  local k = it[p]
  if k == CORE_PLACED then
    p = p + 5
  elseif k == CORE_PLACED_AGAIN then
    local ref = it[p + 6]
    if ref ~= '' and not applied[ref] then note_ids[it[p + 1]] = true end
    p = p + 7
  elseif k == CORE_REDEEM then
    p = p + 7
  else
    local ref = it[p + 3]
    if ref ~= '' and not applied[ref] then note_ids[it[p + 1]] = true end
    p = p + 4
  end
end
local notes = hmget(KEYS[6], set_of(note_ids))
local claim_rec = hmget(KEYS[2], set_of(cd_ids))
local function parse_claim(rec)
  local code, slot, pts, st, rank, ts, sts, rts, who = string.match(rec,
    '^([^|]*)|(%d+)|(%d+)|(%a)|(%d+)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {code = code, slot = tonumber(slot), pts = tonumber(pts), st = st,
          rank = rank, ts = ts, sts = sts, rts = rts, who = who}
end
local claims = {}     -- order id -> parsed claim, for the claims this call may change
local c_out = {}      -- order id -> record to write
local codes = {}
for r = 1, #regs, 3 do codes[regs[r]] = true end
for oid, rec in pairs(claim_rec) do
  local c = parse_claim(rec)
  claims[oid] = c
  codes[c.code] = true
  whos[c.who] = true
end
local wrec = hmget(KEYS[3], set_of(whos))
local rrec = hmget(KEYS[1], set_of(codes))
local spent = tonumber(redis.call('HGET', KEYS[4], 'spent')) or 0
local taken_stock = hmget(KEYS[7], set_of(prizes))
local rdm = hmget(KEYS[8], set_of(rids))

-- state as Lua tables, parsed on first use
local W, R, dirty_w, dirty_r, dirty_c, dirty_n, dirty_x = {}, {}, {}, {}, {}, {}, {}
local function who_of(who)
  local w = W[who]
  if w then return w end
  w = {p = 0, c = 0, r = 0, n = 0, reg = {}}
  local rec = wrec[who]
  if rec then
    local a, b, c, n, rest = string.match(rec, '^(%-?%d+)|(%-?%d+)|(%-?%d+)|(%d+)|(.*)$')
    w.p, w.c, w.r, w.n = tonumber(a), tonumber(b), tonumber(c), tonumber(n)
    for code, m in string.gmatch(rest, '([^:,]+):(%d+)') do w.reg[code] = tonumber(m) end
  end
  W[who] = w
  return w
end
local function region_of(code)
  local r = R[code]
  if r then return r end
  r = {used = 0, rank = 0, taken = 0, rel = {}}
  local rec = rrec[code]
  if rec then
    local u, k, t, rel = string.match(rec, '^(%d+)|(%d+)|(%d+)|(.*)$')
    r.used, r.rank, r.taken = tonumber(u), tonumber(k), tonumber(t)
    for s in string.gmatch(rel, '%d+') do r.rel[#r.rel + 1] = tonumber(s) end
  end
  R[code] = r
  return r
end
local tiers = {}
local function points_for(ri, slot)
  local t = tiers[ri]
  if not t then
    t = {}
    for upto, pts in string.gmatch(regs[(ri - 1) * 3 + 3], '(%d+):(%d+)') do
      t[#t + 1] = {tonumber(upto), tonumber(pts)}
    end
    tiers[ri] = t
  end
  for j = 1, #t do
    if slot <= t[j][1] then return t[j][2] end
  end
  return error('slot ' .. slot .. ' is past the last tier')
end

local counts = {}
local function count(o) counts[o] = (counts[o] or 0) + 1 end

local function decide(oid, who, ri, ts, early)
  local w = who_of(who)
  if cap > 0 and w.n >= cap then return BENEFICIARY_CAP, 0, 0, 0 end
  local code = regs[(ri - 1) * 3 + 1]
  if region_cap > 0 and (w.reg[code] or 0) >= region_cap then
    return BENEFICIARY_REGION_CAP, 0, 0, 0
  end
  local r = region_of(code)
  r.rank = r.rank + 1
  dirty_r[code] = true
  local slot, from_rel
  if #r.rel > 0 then
    slot, from_rel = r.rel[1], true
  elseif r.used < regs[(ri - 1) * 3 + 2] then
    slot = r.used + 1
  else
    return SOLD_OUT, 0, 0, r.rank
  end
  local pts = points_for(ri, slot)
  if budget > 0 and spent + pts > budget then return BUDGET_EXHAUSTED, 0, 0, r.rank end
  if from_rel then table.remove(r.rel, 1) else r.used = r.used + 1 end
  r.taken = r.taken + 1
  spent = spent + pts
  local st, sts = 'p', '0'
  if on_placed or early ~= '' then st, sts = 'c', ts end
  -- most new claims are not touched again in this call: keep the record, parse on demand
  c_out[oid] = code .. '|' .. S[slot] .. '|' .. S[pts] .. '|' .. st .. '|' .. S[r.rank] .. '|'
    .. ts .. '|' .. sts .. '|0|' .. who
  if st == 'p' then w.p = w.p + pts else w.c = w.c + pts end
  w.n = w.n + 1
  if region_cap > 0 then w.reg[code] = (w.reg[code] or 0) + 1 end
  dirty_w[who] = true
  return AWARDED, slot, pts, r.rank
end

local function claim_of(oid)
  local c = claims[oid]
  if c == nil and c_out[oid] then
    c = parse_claim(c_out[oid])
    claims[oid] = c
  end
  return c
end

local function close(oid, ts)
  local c = claim_of(oid)
  if c == nil or c.st == 'r' then return UNCHANGED, 0, 0 end
  local w = who_of(c.who)
  if c.st == 'p' then w.p = w.p - c.pts else w.c = w.c - c.pts end
  w.n = w.n - 1
  if region_cap > 0 then w.reg[c.code] = (w.reg[c.code] or 1) - 1 end
  dirty_w[c.who] = true
  local r = region_of(c.code)
  r.taken = r.taken - 1
  if releases then
    local j = #r.rel + 1
    while j > 1 and r.rel[j - 1] > c.slot do j = j - 1 end
    table.insert(r.rel, j, c.slot)
  end
  dirty_r[c.code] = true
  spent = spent - c.pts
  c.st, c.rts = 'r', ts
  dirty_c[oid] = true
  return REVOKED, c.slot, c.pts
end

local function complete(oid, ts)
  local c = claim_of(oid)
  if c == nil or c.st ~= 'p' then return UNCHANGED, 0, 0 end
  local w = who_of(c.who)
  w.p = w.p - c.pts; w.c = w.c + c.pts
  dirty_w[c.who] = true
  c.st, c.sts = 'c', ts
  dirty_c[oid] = true
  return CONFIRMED, c.slot, c.pts
end

-- the walk, in the batch's order
local out, cancel, nout = {}, {}, 0
local function put(o, s, pts, rank)
  out[nout + 1] = o; out[nout + 2] = s; out[nout + 3] = pts; out[nout + 4] = rank
  nout = nout + 4
end
p = 1
while p <= nit do
  local k = it[p]
  if k == CORE_PLACED then
    local o, s, pts, rank = decide(it[p + 1], it[p + 2], it[p + 3], it[p + 4], '')
    count(o)
    put(o, s, pts, rank)
    p = p + 5
  elseif k == CORE_PLACED_AGAIN then
    local oid, who, ri, ts, early, ref = it[p + 1], it[p + 2], it[p + 3], it[p + 4],
      it[p + 5], it[p + 6]
    if ref == '' then
      local o, s, pts, rank = decide(oid, who, ri, ts, early)
      count(o)
      put(o, s, pts, rank)
    elseif applied[ref] then
      put(DUPLICATE, 0, 0, 0)  -- decided when its call ran
    else
      cancel[ref] = true
      local note = notes[oid]
      if note and string.sub(note, 1, 1) == NOTE_DECIDED then
        local o, s, pts, rank = string.match(note, '^.(%d+)|(%d+)|(%d+)|(%d+)$')
        put(tonumber(o), tonumber(s), tonumber(pts), tonumber(rank))
      else
        if early == '' and note then early = string.sub(note, 2) end
        local o, s, pts, rank = decide(oid, who, ri, ts, early)
        count(o)
        notes[oid] = NOTE_DECIDED .. S[o] .. '|' .. S[s] .. '|' .. S[pts] .. '|' .. S[rank]
        dirty_n[oid] = true
        put(o, s, pts, rank)
      end
    end
    p = p + 7
  elseif k == CORE_REDEEM then
    local rid, who, prize, qty, unit, stock = it[p + 1], it[p + 2], it[p + 3], it[p + 4],
      it[p + 5], it[p + 6]
    local prev = rdm[rid]
    if prev then
      local o, pts = string.match(prev, '^(%d+)|(%d+)$')
      put(tonumber(o), 0, tonumber(pts), 0)
    else
      local o, cost = REDEEMED, unit * qty
      if unit < 0 then
        o = UNKNOWN_PRIZE
      else
        local w = who_of(who)
        local taken = tonumber(taken_stock[prize]) or 0
        if w.c - w.r < cost then
          o = INSUFFICIENT_POINTS
        elseif stock - taken < qty then
          o = OUT_OF_STOCK
        else
          taken_stock[prize] = taken + qty
          prizes[prize] = 'dirty'
          w.r = w.r + cost
          dirty_w[who] = true
        end
      end
      if o ~= REDEEMED then cost = 0 end
      rdm[rid] = S[o] .. '|' .. S[cost]
      dirty_x[rid] = true
      put(o, 0, cost, 0)
    end
    p = p + 7
  else
    local oid, ts, ref = it[p + 1], it[p + 2], it[p + 3]
    local pending = false
    if ref ~= '' and not applied[ref] then
      cancel[ref] = true
      local note = notes[oid]
      pending = not (note and string.sub(note, 1, 1) == NOTE_DECIDED)
    end
    if pending and k == CORE_CLOSED then
      -- closed before its placement was decided: the placement will find it closed
      notes[oid] = NOTE_DECIDED .. CLOSED .. '|0|0|0'
      dirty_n[oid] = true
      count(CLOSED)
      put(TOMBSTONED, 0, 0, 0)
    elseif pending then
      if notes[oid] == nil then notes[oid] = NOTE_EARLY .. ts; dirty_n[oid] = true end
      put(UNCHANGED, 0, 0, 0)
    else
      local o, s, pts
      if k == CORE_CLOSED then o, s, pts = close(oid, ts) else o, s, pts = complete(oid, ts) end
      put(o, s, pts, 0)
    end
    p = p + 4
  end
end

-- writes
local w_out, r_out, n_out = {}, {}, {}
for who in pairs(dirty_w) do
  local w = W[who]
  local reg = ''
  if region_cap > 0 then
    local parts = {}
    for code, m in pairs(w.reg) do if m > 0 then parts[#parts + 1] = code .. ':' .. S[m] end end
    reg = table.concat(parts, ',')
  end
  w_out[who] = S[w.p] .. '|' .. S[w.c] .. '|' .. S[w.r] .. '|' .. S[w.n] .. '|' .. reg
end
for code in pairs(dirty_r) do
  local r = R[code]
  local rel = {}
  for j = 1, #r.rel do rel[j] = S[r.rel[j]] end
  r_out[code] = S[r.used] .. '|' .. S[r.rank] .. '|' .. S[r.taken] .. '|'
    .. table.concat(rel, ',')
end
for oid in pairs(dirty_c) do
  local c = claims[oid]
  c_out[oid] = c.code .. '|' .. S[c.slot] .. '|' .. S[c.pts] .. '|' .. c.st .. '|' .. c.rank
    .. '|' .. c.ts .. '|' .. c.sts .. '|' .. c.rts .. '|' .. c.who
end
for oid in pairs(dirty_n) do n_out[oid] = notes[oid] end
hset(KEYS[3], w_out)
hset(KEYS[1], r_out)
hset(KEYS[2], c_out)
hset(KEYS[6], n_out)
local stock_out, rdm_out = {}, {}
for prize, v in pairs(prizes) do
  if v == 'dirty' then stock_out[prize] = taken_stock[prize] or 0 end
end
for rid in pairs(dirty_x) do rdm_out[rid] = rdm[rid] end
hset(KEYS[7], stock_out)
hset(KEYS[8], rdm_out)
local calls = {[call] = '1'}
for ref in pairs(cancel) do calls[ref] = '0' end
hset(KEYS[5], calls)
if budget > 0 then redis.call('HSET', KEYS[4], 'spent', string.format('%d', spent)) end
for o, m in pairs(counts) do redis.call('HINCRBY', KEYS[4], o, m) end
return cmsgpack.pack(out)
