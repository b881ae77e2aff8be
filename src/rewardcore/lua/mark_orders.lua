-- mark_orders: phase A of a batch. Records, for the order ids of one order bucket, that
-- each order was placed, closed or completed, in the batch's order, and decides what
-- needs no region: duplicate, closed-before-placed (tombstone), and the outcomes the
-- client decided from the event alone (window, region, min paid, a sold-out region).
-- An order record is "T" (tombstone: closed before placed), "-" (placed, no claim
-- possible) or a region code (placed into that region; the region decides its claim).
--
-- KEYS[1] bucket order records (hash order_id -> record)
-- KEYS[2] bucket outcome counters (hash outcome code -> count of placed events)
-- ARGV[1] the events, MessagePack: a flat array, 3 per event: kind, order_id, proposal
--   kind "p" placed: proposal "R<code>" = a candidate for region <code>,
--                    or "=<outcome>" = the client's final outcome for a new order
--   kind "c" closed, kind "d" completed: proposal unused
-- Reply: MessagePack array, one string per event:
--   "=<outcome>"  final (outcome code, see rewardcore.outcomes)
--   "N"           new candidate: ask the region
--   "D<code>"     duplicate of a candidate: outcome duplicate, and make sure the region
--                 decided the first delivery (a client may have died before asking it)
--   "R<code>"     closed/completed of an order placed into region <code>: ask the region
local ev = cmsgpack.unpack(ARGV[1])
local n = #ev / 3
local DUPLICATE, CLOSED, TOMBSTONED, UNCHANGED = '1', '2', '11', '13'

-- unpack() is bounded by Lua's C stack: read and write in chunks
local CHUNK = 4000
local stored = {}
for first = 1, n, CHUNK do
  local ids = {}
  for i = first, math.min(n, first + CHUNK - 1) do ids[#ids + 1] = ev[(i - 1) * 3 + 2] end
  local got = redis.call('HMGET', KEYS[1], unpack(ids))
  for j = 1, #got do stored[first + j - 1] = got[j] end
end

local cur = {}      -- order_id -> record, as updated by this call
local dirty = {}    -- order_ids whose record changed
local counts = {}   -- outcome code -> count
local out = {}

local function count(code) counts[code] = (counts[code] or 0) + 1 end

for i = 1, n do
  local base = (i - 1) * 3
  local kind, oid, prop = ev[base + 1], ev[base + 2], ev[base + 3]
  local rec = cur[oid]
  if rec == nil then
    rec = stored[i]
    if rec == false then rec = nil end
  end
  if kind == 'p' then
    if rec == nil then
      if string.sub(prop, 1, 1) == 'R' then
        rec = string.sub(prop, 2)
        out[i] = 'N'
      else
        rec = '-'
        local code = string.sub(prop, 2)
        count(code)
        out[i] = prop
      end
      cur[oid] = rec; dirty[oid] = true
    elseif rec == 'T' then
      cur[oid] = '-'; dirty[oid] = true
      count(CLOSED)
      out[i] = '=' .. CLOSED
    else
      cur[oid] = rec
      count(DUPLICATE)
      if rec == '-' then out[i] = '=' .. DUPLICATE else out[i] = 'D' .. rec end
    end
  elseif kind == 'c' then
    if rec == nil then
      cur[oid] = 'T'; dirty[oid] = true
      out[i] = '=' .. TOMBSTONED
    else
      cur[oid] = rec
      if rec == '-' or rec == 'T' then out[i] = '=' .. UNCHANGED else out[i] = 'R' .. rec end
    end
  else
    if rec == nil or rec == '-' or rec == 'T' then
      out[i] = '=' .. UNCHANGED
    else
      cur[oid] = rec
      out[i] = 'R' .. rec
    end
  end
end

local pairs_out = {}
for oid, _ in pairs(dirty) do
  pairs_out[#pairs_out + 1] = oid
  pairs_out[#pairs_out + 1] = cur[oid]
  if #pairs_out >= CHUNK then
    redis.call('HSET', KEYS[1], unpack(pairs_out))
    pairs_out = {}
  end
end
if #pairs_out > 0 then redis.call('HSET', KEYS[1], unpack(pairs_out)) end
for code, k in pairs(counts) do redis.call('HINCRBY', KEYS[2], code, k) end
return cmsgpack.pack(out)
