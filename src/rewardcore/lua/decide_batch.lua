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
-- KEYS[1] regions       (string: the campaign's region list fingerprint, 8 bytes, then one
--                        REGION_REC-byte record per region in campaign order: used slots,
--                        taken (non-revoked claims), released slots count (uint32 each),
--                        rank (double); one read and one write per call, where a field per
--                        region cost a few thousand server instructions each way)
-- KEYS[2] claims        (hash order id -> CLAIM_FORMAT: slot, points, rank, region index,
--                        state (p pending, c confirmed, r revoked), then as length-prefixed
--                        text region code, ts, settled_ts, revoked_ts, beneficiary; one
--                        struct.unpack where a pattern with ten captures cost ~10k
--                        instructions per claim)
-- KEYS[3] beneficiaries (hash who -> pending, confirmed, redeemed points and held claims
--                        (non-revoked), BENEFICIARY_FORMAT, then ",code:n,code:n" the
--                        holdings per region when that cap is on; the numbers binary: one
--                        struct.unpack rather than four numbers parsed from text)
-- KEYS[4] scalars       (hash: spent = points of non-revoked claims; outcome code -> count
--                        of placed events decided here)
-- KEYS[5] calls         (hash call id -> 1 applied, 0 cancelled)
-- KEYS[6] notes         (hash order id -> NOTE_*, for orders of cancelled calls)
-- KEYS[7] stock taken   (hash prize id -> units)
-- KEYS[8] redemptions   (hash redemption id -> "outcome|points")
-- KEYS[9] released      (hash region code -> released slots "a,b" ascending; only regions
--                        that have some)
-- ARGV[1] this call's id
-- ARGV[2] "budget|cap|region cap|releases 0/1|settles on placed 0/1|regions|fingerprint"
--         (points, claims, the campaign's region count and region list fingerprint)
-- ARGV[3] the call's regions, MessagePack flat array, 4 per region: code (string), index
--         in the campaign (1-based), slots, tiers "upto:points,upto:points"; items name a
--         region by its position in this array (1-based)
-- ARGV[4] the items, MessagePack flat array; a beneficiary is its position in ARGV[5] (ts
--         as text: they are only stored, and text needs no number formatting in Lua):
--   CORE_PLACED who, region, at: a new candidate, its order id and ts at byte `at` of ARGV[6]
--   CORE_PLACED_AGAIN oid, who, region, ts, early completion ('' none), ref ('' this call):
--     a candidate completed before it was placed, or one sent before in call <ref>
--   CORE_CLOSED / CORE_COMPLETED oid, ts, ref
--   CORE_REDEEM redemption id, who, prize, qty, unit cost (-1 unknown prize), stock
-- ARGV[5] the call's beneficiaries, MessagePack array of distinct strings
-- ARGV[6] the new candidates' order ids and ts, CANDIDATE_IDS each: unpacked only for an
--         award, so that a refused order costs no Lua strings (their interning, and the
--         garbage collector's work after, were a third of the core's work per sold-out order)
-- ARGV[7] the positions in ARGV[4] of the items other than CORE_PLACED, MessagePack array:
--         the passes that gather what those need skip the new candidates
-- Reply: MessagePack flat array, 4 per item: outcome, slot, points, rank; or
--   {CALL_CANCELLED} / {CALL_REPEATED} when this call id was seen before.
local call = ARGV[1]
local b_, c_, rc_, rel_, onp_, nr_, fingerprint = string.match(ARGV[2],
  '^(%d+)|(%d+)|(%d+)|(%d)|(%d)|(%d+)|(%x+)$')
local budget, cap, region_cap = tonumber(b_), tonumber(c_), tonumber(rc_)
local releases, on_placed = rel_ == '1', onp_ == '1'
local n_regions = tonumber(nr_)

local seen_call = redis.call('HGET', KEYS[5], call)
if seen_call then
  return cmsgpack.pack({seen_call == '0' and CALL_CANCELLED or CALL_REPEATED})
end

local read, blob = pcall(redis.call, 'GET', KEYS[1])  -- a hash: an earlier layout
if not read or (blob and (#blob ~= #fingerprint + REGION_REC * n_regions
                          or string.sub(blob, 1, #fingerprint) ~= fingerprint)) then
  return redis.error_reply('REGIONS ' .. OTHER_REGIONS)
end
local regs = cmsgpack.unpack(ARGV[3])
local it = cmsgpack.unpack(ARGV[4])
local wl = cmsgpack.unpack(ARGV[5])
local ids = ARGV[6]
local rare = cmsgpack.unpack(ARGV[7])
local nit, nwl = #it, #wl
local CHUNK = 2000  -- unpack() is bounded by Lua's C stack
-- number -> decimal text, memoized: formatting a number costs ~0.4 us here and the same
-- small numbers (slots, points, ranks, counts) recur across the call's records
local S = setmetatable({}, {__index = function(t, n)
  local s = string.format('%d', n); t[n] = s; return s
end})

-- the values of fields[1..n], in order (false where absent)
local function hmget_list(key, fields, n)
  local out = {}
  for first = 1, n, CHUNK do
    local got = redis.call('HMGET', key, unpack(fields, first, math.min(n, first + CHUNK - 1)))
    for j = 1, #got do out[first + j - 1] = got[j] end
  end
  return out
end
-- field -> value, for the fields present
local function hmget(key, fields)
  local out, got = {}, hmget_list(key, fields, #fields)
  for j = 1, #fields do out[fields[j]] = got[j] or nil end
  return out
end
local function hset(key, map)
  local put, m = {}, 0
  for f, v in pairs(map) do
    put[m + 1] = f; put[m + 2] = v
    m = m + 2
    if m >= 2 * CHUNK then redis.call('HSET', key, unpack(put, 1, m)); m = 0 end
  end
  if m > 0 then redis.call('HSET', key, unpack(put, 1, m)) end
end
local function set_of(list) local l = {}; for k in pairs(list) do l[#l + 1] = k end; return l end

-- what the items other than new candidates need
local refs, cd_ids, rids, prizes = {}, {}, {}, {}
for _, p in ipairs(rare) do
  local k = it[p]
  if k == CORE_PLACED_AGAIN then
    if it[p + 6] ~= '' then refs[it[p + 6]] = true end
  elseif k == CORE_REDEEM then
    rids[it[p + 1]] = true; prizes[it[p + 3]] = true
  else
    cd_ids[it[p + 1]] = true
    if it[p + 3] ~= '' then refs[it[p + 3]] = true end
  end
end

-- reads, all before the first write
local applied = {}
for ref, v in pairs(hmget(KEYS[5], set_of(refs))) do applied[ref] = v == '1' end
local note_ids = {}
for _, p in ipairs(rare) do
  local k = it[p]
  local ref = k == CORE_PLACED_AGAIN and it[p + 6] or k ~= CORE_REDEEM and it[p + 3]
  if ref and ref ~= '' and not applied[ref] then note_ids[it[p + 1]] = true end
end
local notes = hmget(KEYS[6], set_of(note_ids))
local claim_rec = hmget(KEYS[2], set_of(cd_ids))
local function parse_claim(rec)
  local slot, pts, rank, ri, st, code, ts, sts, rts, who = struct.unpack(CLAIM_FORMAT, rec)
  return {code = code, slot = slot, pts = pts, st = st, rank = rank, ts = ts, sts = sts,
          rts = rts, ri = ri, who = who}
end
local function claim_record(c)
  return struct.pack(CLAIM_FORMAT, c.slot, c.pts, c.rank, c.ri, c.st, #c.code, c.code,
                     #c.ts, c.ts, #c.sts, c.sts, #c.rts, c.rts, #c.who, c.who)
end
-- Beneficiaries are known by their place in wl; the beneficiaries of the claims that closes
-- and completions change join it (a lookup table is built only then).
local place
local function who_index(who)
  if not place then
    place = {}
    for j = 1, nwl do place[wl[j]] = j end
  end
  local j = place[who]
  if not j then nwl = nwl + 1; wl[nwl] = who; place[who] = nwl; j = nwl end
  return j
end
local claims = {}     -- order id -> parsed claim, for the claims this call may change
local c_out = {}      -- order id -> record to write
for oid, rec in pairs(claim_rec) do
  local c = parse_claim(rec)
  c.wi = who_index(c.who)
  claims[oid] = c
end
local wrec = hmget_list(KEYS[3], wl, nwl)
local spent = tonumber(redis.call('HGET', KEYS[4], 'spent')) or 0
local taken_stock = hmget(KEYS[7], set_of(prizes))
local rdm = hmget(KEYS[8], set_of(rids))

-- State as Lua arrays, read from the records on first use: beneficiaries by place in wl
-- (pending, confirmed, redeemed points, held claims, per-region holdings as text), regions
-- by campaign index.
local Wp, Wc, Wr, Wn, Wheld = {}, {}, {}, {}, {}
local dirty_w, dirty_c, dirty_n, dirty_x = {}, {}, {}, {}
local function load_who(j)
  local rec = wrec[j]
  if rec then
    Wp[j], Wc[j], Wr[j], Wn[j] = struct.unpack(BENEFICIARY_FORMAT, rec)
    Wheld[j] = string.sub(rec, BENEFICIARY_REC + 1)
  else
    Wp[j], Wc[j], Wr[j], Wn[j], Wheld[j] = 0, 0, 0, 0, ''
  end
end
-- A beneficiary's claims in one region, in the text ",code:n,code:n" (regions it holds
-- claims in). A beneficiary may hold claims in hundreds of regions: the text is searched
-- and spliced in place (a plain find), never parsed whole.
local needles = setmetatable({}, {__index = function(t, code)
  local s = ',' .. code .. ':'; t[code] = s; return s
end})
local function held_in(j, code)
  local held = Wheld[j]
  if held == '' then return 0 end
  local needle = needles[code]
  local at = string.find(held, needle, 1, true)
  return at and tonumber(string.match(held, '^%d+', at + #needle)) or 0
end
local function add_held(j, code, d)
  local held, needle = Wheld[j], needles[code]
  local at = held ~= '' and string.find(held, needle, 1, true)
  if not at then
    if d > 0 then Wheld[j] = held .. needle .. S[d] end
    return
  end
  local from = at + #needle
  local digits = string.match(held, '^%d+', from)
  local m = tonumber(digits) + d
  local rest = string.sub(held, from + #digits)
  if m > 0 then
    Wheld[j] = string.sub(held, 1, from - 1) .. S[m] .. rest
  else
    Wheld[j] = string.sub(held, 1, at - 1) .. rest
  end
end
-- Regions by campaign index: never-used slots handed out, taken, rank, released slots (a
-- list, only where there are some: read from KEYS[9] then, still before the first write).
-- Every region read is changed by this call, so `touched` lists the records to write back.
local Rused, Rtaken, Rrank, Rrel, Rhad, Rcode, touched = {}, {}, {}, {}, {}, {}, {}
local function load_region(index, code)
  local nrel = 0
  if blob then
    Rused[index], Rtaken[index], nrel, Rrank[index] = struct.unpack(REGION_FORMAT, blob,
      #fingerprint + 1 + (index - 1) * REGION_REC)
  else
    Rused[index], Rtaken[index], Rrank[index] = 0, 0, 0
  end
  if nrel > 0 then
    local rel = {}
    for s in string.gmatch(redis.call('HGET', KEYS[9], code), '%d+') do
      rel[#rel + 1] = tonumber(s)
    end
    Rrel[index], Rhad[index] = rel, true
  end
  Rcode[index] = code
  touched[#touched + 1] = index
end
-- a region's tiers as a flat list upto, points, upto, points...: parsed once per call for
-- each distinct text (regions often share one)
local tiers = setmetatable({}, {__index = function(t, text)
  local list = {}
  for upto, pts in string.gmatch(text, '(%d+):(%d+)') do
    list[#list + 1] = tonumber(upto); list[#list + 1] = tonumber(pts)
  end
  t[text] = list
  return list
end})

local counts = {}
local capped = cap > 0 or region_cap > 0

-- a placed candidate by beneficiary j into the call's region ri; oid and ts, when nil, are
-- read from ids at `at` (only for an award)
local function decide(j, ri, oid, ts, at, early)
  if capped then
    if Wn[j] == nil then load_who(j) end
    if cap > 0 and Wn[j] >= cap then return BENEFICIARY_CAP, 0, 0, 0 end
  end
  local base = (ri - 1) * 4
  local code, index = regs[base + 1], regs[base + 2]
  if region_cap > 0 and held_in(j, code) >= region_cap then
    return BENEFICIARY_REGION_CAP, 0, 0, 0
  end
  local rank = Rrank[index]
  if rank == nil then load_region(index, code); rank = Rrank[index] end
  rank = rank + 1
  Rrank[index] = rank
  local rel, slot = Rrel[index]
  if rel and #rel > 0 then
    slot = rel[1]
  elseif Rused[index] < regs[base + 3] then
    slot = Rused[index] + 1
  else
    return SOLD_OUT, 0, 0, rank
  end
  local t, pts = tiers[regs[base + 4]]
  for x = 1, #t, 2 do
    if slot <= t[x] then pts = t[x + 1]; break end
  end
  if not pts then return error('slot ' .. slot .. ' is past the last tier') end
  if budget > 0 and spent + pts > budget then return BUDGET_EXHAUSTED, 0, 0, rank end
  if rel and #rel > 0 then table.remove(rel, 1) else Rused[index] = slot end
  Rtaken[index] = Rtaken[index] + 1
  spent = spent + pts
  if oid == nil then oid, ts = struct.unpack(CANDIDATE_IDS, ids, at) end
  local st, sts = 'p', '0'
  if on_placed or early ~= '' then st, sts = 'c', ts end
  -- most new claims are not touched again in this call: keep the record, parse on demand
  local who = wl[j]
  c_out[oid] = struct.pack(CLAIM_FORMAT, slot, pts, rank, index, st, #code, code, #ts, ts,
                           #sts, sts, 1, '0', #who, who)
  if Wn[j] == nil then load_who(j) end
  if st == 'p' then Wp[j] = Wp[j] + pts else Wc[j] = Wc[j] + pts end
  Wn[j] = Wn[j] + 1
  if region_cap > 0 then add_held(j, code, 1) end
  dirty_w[j] = true
  return AWARDED, slot, pts, rank
end

local function claim_of(oid)
  local c = claims[oid]
  if c == nil and c_out[oid] then
    c = parse_claim(c_out[oid])
    c.wi = who_index(c.who)
    claims[oid] = c
  end
  return c
end

local function close(oid, ts)
  local c = claim_of(oid)
  if c == nil or c.st == 'r' then return UNCHANGED, 0, 0 end
  local j = c.wi
  if Wn[j] == nil then load_who(j) end
  if c.st == 'p' then Wp[j] = Wp[j] - c.pts else Wc[j] = Wc[j] - c.pts end
  Wn[j] = Wn[j] - 1
  if region_cap > 0 then add_held(j, c.code, -1) end
  dirty_w[j] = true
  local index = c.ri
  if Rrank[index] == nil then load_region(index, c.code) end
  Rtaken[index] = Rtaken[index] - 1
  if releases then
    local rel = Rrel[index]
    if not rel then rel = {}; Rrel[index] = rel end
    local k = #rel + 1
    while k > 1 and rel[k - 1] > c.slot do k = k - 1 end
    table.insert(rel, k, c.slot)
  end
  spent = spent - c.pts
  c.st, c.rts = 'r', ts
  dirty_c[oid] = true
  return REVOKED, c.slot, c.pts
end

local function complete(oid, ts)
  local c = claim_of(oid)
  if c == nil or c.st ~= 'p' then return UNCHANGED, 0, 0 end
  local j = c.wi
  if Wn[j] == nil then load_who(j) end
  Wp[j] = Wp[j] - c.pts; Wc[j] = Wc[j] + c.pts
  dirty_w[j] = true
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
local p = 1
while p <= nit do
  local k = it[p]
  if k == CORE_PLACED then  -- the common item: its steps written out, no calls but decide
    local o, s, pts, rank = decide(it[p + 1], it[p + 2], nil, nil, it[p + 3], '')
    counts[o] = (counts[o] or 0) + 1
    out[nout + 1] = o; out[nout + 2] = s; out[nout + 3] = pts; out[nout + 4] = rank
    nout = nout + 4
    p = p + 4
  elseif k == CORE_PLACED_AGAIN then
    local oid, j, ri, ts, early, ref = it[p + 1], it[p + 2], it[p + 3], it[p + 4],
      it[p + 5], it[p + 6]
    if ref == '' then
      local o, s, pts, rank = decide(j, ri, oid, ts, 0, early)
      counts[o] = (counts[o] or 0) + 1
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
        local o, s, pts, rank = decide(j, ri, oid, ts, 0, early)
        counts[o] = (counts[o] or 0) + 1
        notes[oid] = NOTE_DECIDED .. S[o] .. '|' .. S[s] .. '|' .. S[pts] .. '|' .. S[rank]
        dirty_n[oid] = true
        put(o, s, pts, rank)
      end
    end
    p = p + 7
  elseif k == CORE_REDEEM then
    local rid, j, prize, qty, unit, stock = it[p + 1], it[p + 2], it[p + 3], it[p + 4],
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
        if Wn[j] == nil then load_who(j) end
        local taken = tonumber(taken_stock[prize]) or 0
        if Wc[j] - Wr[j] < cost then
          o = INSUFFICIENT_POINTS
        elseif stock - taken < qty then
          o = OUT_OF_STOCK
        else
          taken_stock[prize] = taken + qty
          prizes[prize] = 'dirty'
          Wr[j] = Wr[j] + cost
          dirty_w[j] = true
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
      counts[CLOSED] = (counts[CLOSED] or 0) + 1
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
local w_out, n_out = {}, {}
for j in pairs(dirty_w) do
  w_out[wl[j]] = struct.pack(BENEFICIARY_FORMAT, Wp[j], Wc[j], Wr[j], Wn[j]) .. Wheld[j]
end
-- the region blob, spliced: unchanged records are copied by the run, not one by one
local rel_out, rel_gone = {}, {}
if #touched > 0 then
  table.sort(touched)
  local base = blob or (fingerprint .. string.rep('\0', REGION_REC * n_regions))
  local parts, at = {}, 1
  for _, index in ipairs(touched) do
    local off, rel = #fingerprint + 1 + (index - 1) * REGION_REC, Rrel[index]
    local nrel = rel and #rel or 0
    parts[#parts + 1] = string.sub(base, at, off - 1)
    parts[#parts + 1] = struct.pack(REGION_FORMAT, Rused[index], Rtaken[index], nrel,
                                    Rrank[index])
    at = off + REGION_REC
    if nrel > 0 then
      local text = {}
      for x = 1, nrel do text[x] = S[rel[x]] end
      rel_out[Rcode[index]] = table.concat(text, ',')
    elseif Rhad[index] then
      rel_gone[#rel_gone + 1] = Rcode[index]
    end
  end
  parts[#parts + 1] = string.sub(base, at)
  blob = table.concat(parts)
end
for oid in pairs(dirty_c) do c_out[oid] = claim_record(claims[oid]) end
for oid in pairs(dirty_n) do n_out[oid] = notes[oid] end
hset(KEYS[3], w_out)
if #touched > 0 then redis.call('SET', KEYS[1], blob) end
hset(KEYS[9], rel_out)
for _, code in ipairs(rel_gone) do redis.call('HDEL', KEYS[9], code) end  -- rare
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
