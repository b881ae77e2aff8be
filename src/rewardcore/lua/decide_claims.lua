-- decide_claims: one region's part of a batch round, in the batch's order. Decides the
-- claims of new orders placed into the region (region cap, then slot choice: the smallest
-- released slot, else the next never-used one, else sold out; then the budget allowance
-- the ledger granted), revokes claims of closed orders (a released slot goes back to the
-- region under on_close = "release") and confirms claims of completed orders.
-- Every order's decision is recorded, so a retried or redelivered call returns the first
-- decision and changes nothing (idempotent by order id).
--
-- KEYS[1] region state (hash: used = never-used slots handed out, taken = non-revoked
--         claims, rel = released slots "3,7" ascending, "<outcome code>" = placed events
--         decided here with that outcome: 0 awarded, 2 closed first, 6 beneficiary cap,
--         7 region cap, 8 sold out, 9 budget)
-- KEYS[2] decisions (hash order_id -> "slot|points|state|ts|beneficiary" for a claim,
--         state p = pending, c = confirmed, r = revoked; or "#<outcome code>")
-- KEYS[3] non-revoked claims per beneficiary in this region (hash beneficiary -> count)
-- ARGV[1] slots of the region          ARGV[2] 1 = on_close "release", 0 = "forfeit"
-- ARGV[3] state of a new claim, p or c ARGV[4] claims per beneficiary per region, 0 = no cap
-- ARGV[5] tiers "upto:points,upto:points,..." (points are integer points)
-- ARGV[6] the items, MessagePack: a flat array, 5 per item: kind, order_id, beneficiary,
--   ts (epoch ms, as a string: Lua numbers are doubles), arg
--   kind p: new order, arg = points allowance granted by the ledger (-1 = no budget)
--   kind q: the same for a redelivered order: decided only if no decision exists yet
--   kind f: new order whose outcome the ledger already decided, arg = outcome code
--   kind c: closed;  kind d: completed (beneficiary, ts and arg unused)
-- Reply: MessagePack flat array, 6 values per item: outcome, slot, points, beneficiary,
--   claim state ("" when the order has no claim), fresh (1 = decided or changed now);
--   then sold_out (1/0), then, when sold out and the region cap is on, the holders as
--   beneficiary/count pairs.
local slots = tonumber(ARGV[1])
local releases = tonumber(ARGV[2]) == 1
local new_state = ARGV[3]
local region_cap = tonumber(ARGV[4])
local items = cmsgpack.unpack(ARGV[6])
local n = #items / 5

local AWARDED, CLOSED, REGION_CAP, SOLD_OUT, BUDGET = 0, 2, 7, 8, 9
local REVOKED, CONFIRMED, UNCHANGED = 10, 12, 13
local CLAIM = '^(%d+)|(%d+)|(%a)|([^|]*)|(.*)$'

local tier_upto, tier_points = {}, {}
for upto, points in string.gmatch(ARGV[5], '(%d+):(%d+)') do
  tier_upto[#tier_upto + 1] = tonumber(upto)
  tier_points[#tier_points + 1] = tonumber(points)
end
local function points_for(slot)
  for t = 1, #tier_upto do
    if slot <= tier_upto[t] then return tier_points[t] end
  end
  return error('slot ' .. slot .. ' is past the last tier')
end

-- the region's counters and every outcome count this script can add to, in one read
local COUNTED = {AWARDED, CLOSED, 6, REGION_CAP, SOLD_OUT, BUDGET}
local head = redis.call('HMGET', KEYS[1], 'used', 'taken', 'rel', '0', '2', '6', '7', '8', '9')
local used = tonumber(head[1]) or 0
local taken = tonumber(head[2]) or 0
local counts = {}
for k = 1, #COUNTED do counts[COUNTED[k]] = tonumber(head[3 + k]) or 0 end
local counts_changed = false
local released, rel_changed = {}, false
if head[3] then
  for s in string.gmatch(head[3], '%d+') do released[#released + 1] = tonumber(s) end
end

-- one read for every decision and every holder count the items need
local CHUNK = 4000
local stored = {}
for first = 1, n, CHUNK do
  local ids = {}
  for i = first, math.min(n, first + CHUNK - 1) do ids[#ids + 1] = items[(i - 1) * 5 + 2] end
  local got = redis.call('HMGET', KEYS[2], unpack(ids))
  for j = 1, #got do stored[first + j - 1] = got[j] end
end
local held, held_dirty = {}, {}
if region_cap > 0 then
  local whos, seen = {}, {}
  for i = 1, n do
    local w = items[(i - 1) * 5 + 3]
    if w ~= '' and not seen[w] then seen[w] = true; whos[#whos + 1] = w end
  end
  for first = 1, #whos, CHUNK do
    local part = {}
    for j = first, math.min(#whos, first + CHUNK - 1) do part[#part + 1] = whos[j] end
    local got = redis.call('HMGET', KEYS[3], unpack(part))
    for j = 1, #part do held[part[j]] = tonumber(got[j]) or 0 end
  end
end
local function get_held(who)
  local h = held[who]
  if h == nil then
    h = tonumber(redis.call('HGET', KEYS[3], who)) or 0
    held[who] = h
  end
  return h
end
local function add_held(who, d)
  held[who] = get_held(who) + d
  held_dirty[who] = true
end

local decisions, dirty = {}, {}
local function count(code) counts[code] = counts[code] + 1; counts_changed = true end
local function record(oid, d) decisions[oid] = d; dirty[oid] = true end

local out = {}
local function reply(outcome, slot, points, who, state, fresh)
  local k = #out
  out[k + 1] = outcome; out[k + 2] = slot; out[k + 3] = points
  out[k + 4] = who; out[k + 5] = state; out[k + 6] = fresh
end

for i = 1, n do
  local base = (i - 1) * 5
  local kind, oid, who, ts, arg = items[base + 1], items[base + 2], items[base + 3],
    items[base + 4], items[base + 5]
  local d = decisions[oid]
  if d == nil then
    d = stored[i]
    if d == false then d = nil end
  end
  local slot, points, state, cts, cwho
  if d ~= nil then slot, points, state, cts, cwho = string.match(d, CLAIM) end
  if kind == 'p' or kind == 'q' or kind == 'f' then
    if d ~= nil then
      -- decided before (a retry or a redelivery): the first decision, unchanged
      if slot then reply(AWARDED, tonumber(slot), tonumber(points), cwho, state, 0)
      else reply(tonumber(string.sub(d, 2)), 0, 0, '', '', 0) end
    elseif kind == 'f' then
      record(oid, '#' .. arg); count(arg)
      reply(arg, 0, 0, '', '', 1)
    else
      local outcome
      slot, points = 0, 0
      if region_cap > 0 and get_held(who) >= region_cap then
        outcome = REGION_CAP
      elseif #released > 0 then
        slot = released[1]
      elseif used < slots then
        slot = used + 1
      else
        outcome = SOLD_OUT
      end
      if outcome == nil then
        points = points_for(slot)
        if arg >= 0 and points > arg then
          outcome, slot, points = BUDGET, 0, 0   -- the slot is not consumed
        end
      end
      if outcome == nil then
        if #released > 0 and released[1] == slot then
          table.remove(released, 1); rel_changed = true
        else
          used = used + 1
        end
        taken = taken + 1
        if region_cap > 0 then add_held(who, 1) end
        record(oid, slot .. '|' .. points .. '|' .. new_state .. '|' .. ts .. '|' .. who)
        count(AWARDED)
        reply(AWARDED, slot, points, who, new_state, 1)
      else
        record(oid, '#' .. outcome); count(outcome)
        reply(outcome, 0, 0, '', '', 1)
      end
    end
  elseif kind == 'c' then
    if d == nil then
      -- closed before its placement was decided (the placing client died, or is still on
      -- its way): that placement can never win now
      record(oid, '#' .. CLOSED); count(CLOSED)
      reply(UNCHANGED, 0, 0, '', '', 1)
    elseif slot == nil then
      reply(UNCHANGED, 0, 0, '', '', 0)
    elseif state == 'r' then
      -- reported again so a ledger that missed it can catch up
      reply(UNCHANGED, tonumber(slot), tonumber(points), cwho, 'r', 0)
    else
      record(oid, slot .. '|' .. points .. '|r|' .. cts .. '|' .. cwho)
      slot = tonumber(slot)
      taken = taken - 1
      if region_cap > 0 then add_held(cwho, -1) end
      if releases then
        local pos = #released + 1
        for k = 1, #released do
          if released[k] > slot then pos = k; break end
        end
        table.insert(released, pos, slot); rel_changed = true
      end
      reply(REVOKED, slot, tonumber(points), cwho, 'r', 1)
    end
  else -- completed
    if slot == nil then
      reply(UNCHANGED, 0, 0, '', '', 0)
    elseif state == 'p' then
      record(oid, slot .. '|' .. points .. '|c|' .. cts .. '|' .. cwho)
      reply(CONFIRMED, tonumber(slot), tonumber(points), cwho, 'c', 1)
    else
      reply(UNCHANGED, tonumber(slot), tonumber(points), cwho, state, 0)
    end
  end
end

local pairs_out = {}
for oid, _ in pairs(dirty) do
  pairs_out[#pairs_out + 1] = oid
  pairs_out[#pairs_out + 1] = decisions[oid]
  if #pairs_out >= CHUNK then
    redis.call('HSET', KEYS[2], unpack(pairs_out)); pairs_out = {}
  end
end
if #pairs_out > 0 then redis.call('HSET', KEYS[2], unpack(pairs_out)) end
local head_out = {'used', used, 'taken', taken}
if rel_changed then
  head_out[#head_out + 1] = 'rel'; head_out[#head_out + 1] = table.concat(released, ',')
end
if counts_changed then
  for k = 1, #COUNTED do
    local code = COUNTED[k]
    if counts[code] > 0 then
      head_out[#head_out + 1] = tostring(code); head_out[#head_out + 1] = counts[code]
    end
  end
end
redis.call('HSET', KEYS[1], unpack(head_out))
local gone, keep = {}, {}
for who, _ in pairs(held_dirty) do
  if held[who] > 0 then keep[#keep + 1] = who; keep[#keep + 1] = held[who]
  else gone[#gone + 1] = who end
  if #keep >= CHUNK then redis.call('HSET', KEYS[3], unpack(keep)); keep = {} end
  if #gone >= CHUNK then redis.call('HDEL', KEYS[3], unpack(gone)); gone = {} end
end
if #keep > 0 then redis.call('HSET', KEYS[3], unpack(keep)) end
if #gone > 0 then redis.call('HDEL', KEYS[3], unpack(gone)) end

local sold_out = (#released == 0 and used >= slots) and 1 or 0
out[#out + 1] = sold_out
if sold_out == 1 and region_cap > 0 then
  local h = redis.call('HGETALL', KEYS[3])
  for k = 1, #h do out[#out + 1] = h[k] end
end
return cmsgpack.pack(out)
