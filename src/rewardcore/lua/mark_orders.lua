-- mark_orders: step 1 of a batch, on one or more order buckets (several in one call where
-- the keys may share a script: a standalone server; a cluster gets one call per bucket,
-- since a script cannot touch keys of different slots). Walks each bucket's events of the
-- batch in order and keeps each order's record: dedup, tombstones (closed before placed),
-- early completions (completed before placed), the client's final outcomes that need no
-- core (window, region, min paid), and which core call a candidate was sent to. Every
-- read comes before the first write, so a refused or failed call changes nothing.
--
-- KEYS, 2 per bucket:
-- KEYS[2j-1] order records (hash order id -> record, see REC_* in rewardcore/_redis_wire.py,
--         and the header field BUCKET_HEADER_FIELD that keeps the hash a hash table):
--         "T" tombstone, "E<ts>" completed early, "-" decided here,
--         "R<call id>" or "R<call id>=<early ts>" sent to the core in that call
-- KEYS[2j]   outcome counts of placed events decided here (hash outcome code -> count)
-- ARGV[1] the core call id the batch's candidates go to
-- ARGV[1+j] bucket j's events, MessagePack: a flat array, 3 per event: kind (BUCKET_*),
--           order id, argument (placed: -1 candidate, else the final outcome; completed: ts)
-- Reply: MessagePack array, per bucket an array, one value per event: an outcome code
--   (final), NEW_CANDIDATE (a new candidate: decide it in the core), or a string:
--   "N<early ts>"         a new candidate completed before it was placed
--   "Q<ref>"              a redelivered candidate sent in another call <ref> (outcome
--                         duplicate); the core decides it if <ref> never ran
--   "C<ref>"              a closed/completed event of an order sent to the core in <ref>
--                         ("C" alone: in this very call)
local call = ARGV[1]
local nb = #KEYS / 2
local CHUNK = 2000  -- unpack() is bounded by Lua's C stack: read and write in chunks
local mine = REC_ROUTED .. call

-- reads, every bucket's, before the first write
local evs, stored, headed = {}, {}, {}
for j = 1, nb do
  headed[j] = redis.call('HEXISTS', KEYS[2 * j - 1], BUCKET_HEADER_FIELD) == 1
  local ev = cmsgpack.unpack(ARGV[1 + j])
  local n = #ev / 3
  local st
  for first = 1, n, CHUNK do
    local ids, m = {}, 0
    for i = first, math.min(n, first + CHUNK - 1) do m = m + 1; ids[m] = ev[i * 3 - 1] end
    local got = redis.call('HMGET', KEYS[2 * j - 1], unpack(ids, 1, m))
    if first == 1 then
      st = got  -- the common case: one chunk
    else
      for k = 1, m do st[first + k - 1] = got[k] end
    end
  end
  evs[j], stored[j] = ev, st
end

-- A close or completion of an order routed to the core goes there too: 'C' when this call
-- sent it, else 'C<call>' naming the call that did.
local function to_core(rec)
  local ref = string.match(rec, '^R([^=]*)')
  return ref == call and 'C' or ('C' .. ref)
end

-- one bucket's walk, in Lua tables: cur (order id -> record changed by this call), counts
local function walk(ev, stored, cur, counts, out)
  local function count(code) counts[code] = (counts[code] or 0) + 1 end
  for i = 1, #ev / 3 do
    local base = (i - 1) * 3
    local kind, oid, arg = ev[base + 1], ev[base + 2], ev[base + 3]
    local rec = cur[oid]
    if rec == nil then
      rec = stored[i]
      if rec == false then rec = nil end
    end
    local head = rec and string.sub(rec, 1, 1)
    if kind == BUCKET_PLACED then
      if rec == nil or head == REC_EARLY then
        if arg < 0 then
          if rec then
            cur[oid] = mine .. '=' .. string.sub(rec, 2)
            out[i] = 'N' .. string.sub(rec, 2)
          else
            cur[oid] = mine
            out[i] = NEW_CANDIDATE
          end
        else
          cur[oid] = REC_DONE
          count(arg)
          out[i] = arg
        end
      elseif head == REC_TOMBSTONE then
        cur[oid] = REC_DONE
        count(CLOSED)
        out[i] = CLOSED
      else
        count(DUPLICATE)
        local ref = head == REC_ROUTED and string.match(rec, '^R([^=]*)')
        if ref and ref ~= call then
          out[i] = 'Q' .. string.sub(rec, 2)
        else
          out[i] = DUPLICATE
        end
      end
    elseif head == REC_ROUTED then
      out[i] = to_core(rec)  -- a close or completion of an order the core decides
    elseif kind == BUCKET_CLOSED and (rec == nil or head == REC_EARLY) then
      cur[oid] = REC_TOMBSTONE
      out[i] = TOMBSTONED
    else
      if kind == BUCKET_COMPLETED and rec == nil then cur[oid] = REC_EARLY .. arg end
      out[i] = UNCHANGED
    end
  end
end

local outs, changes = {}, {}
for j = 1, nb do
  local cur, counts, out = {}, {}, {}
  walk(evs[j], stored[j], cur, counts, out)
  outs[j], changes[j] = out, {cur, counts}
end

-- writes
for j = 1, nb do
  local cur, counts = changes[j][1], changes[j][2]
  local put, m = {}, 0
  if not headed[j] then put, m = {BUCKET_HEADER_FIELD, BUCKET_HEADER}, 2 end
  for oid, rec in pairs(cur) do
    put[m + 1] = oid
    put[m + 2] = rec
    m = m + 2
    if m >= 2 * CHUNK then redis.call('HSET', KEYS[2 * j - 1], unpack(put, 1, m)); m = 0 end
  end
  if m > 0 then redis.call('HSET', KEYS[2 * j - 1], unpack(put, 1, m)) end
  for code, k in pairs(counts) do redis.call('HINCRBY', KEYS[2 * j], code, k) end
end
return cmsgpack.pack(outs)
