-- settle_claims: step L2 of a batch round, on the ledger. Returns the capacity a round's
-- grant did not use, and brings the ledger's copy of each claim the regions reported up to
-- the claim's state: balances move by the claim's points (pending/confirmed), a revoked
-- claim gives its budget points and its cap token back. States only move forward
-- (none < pending < confirmed < revoking < revoked), so applying a report twice, late, or
-- after a newer one changes nothing (idempotent by order id).
--
-- KEYS[1] ledger scalars (hash: spent, relver = how many rounds released slots)
-- KEYS[2] tokens out per beneficiary     KEYS[3] ledger claims (see grant_capacity)
-- KEYS[4] balances                       KEYS[5] open grants
-- ARGV[1] grant id, "" = none   ARGV[2] unused budget points of the grant
-- ARGV[3] 1 = the campaign has a budget  ARGV[4] 1 = the campaign has a beneficiary cap
-- ARGV[5] 1 = a slot was released in this round (other clients drop their sold-out cache)
-- ARGV[6] MessagePack flat array of pairs: beneficiary, unused tokens of the grant
-- ARGV[7] MessagePack flat array, 4 per claim: order_id, beneficiary, points,
--         state (p, c or r)
-- Reply: MessagePack flat array of beneficiary/tokens-out pairs for every beneficiary
--   touched (when capped)
local gid = ARGV[1]
local unused_pts = tonumber(ARGV[2])
local has_budget = tonumber(ARGV[3]) == 1
local has_cap = tonumber(ARGV[4]) == 1
local toks = cmsgpack.unpack(ARGV[6])
local claims = cmsgpack.unpack(ARGV[7])
local t = #toks / 2

local touched = {}
local spent_delta = 0
local tok_delta = {}

if gid ~= '' and redis.call('HDEL', KEYS[5], gid) == 1 then
  spent_delta = spent_delta - unused_pts
  for i = 1, t do
    local who, k = toks[(i - 1) * 2 + 1], toks[(i - 1) * 2 + 2]
    tok_delta[who] = (tok_delta[who] or 0) - k
    touched[who] = true
  end
end

local RANK = {p = 1, c = 2, x = 3, r = 4}
local bal_delta = {}
local function bal(f, d) bal_delta[f] = (bal_delta[f] or 0) + d end

local nc = #claims / 4
local CHUNK = 2000  -- unpack() is bounded by Lua's C stack: at most 4000 values a call
local lc_out = {}
for first = 1, nc, CHUNK do
  local last = math.min(nc, first + CHUNK - 1)
  local ids = {}
  for i = first, last do ids[#ids + 1] = claims[(i - 1) * 4 + 1] end
  local recs = redis.call('HMGET', KEYS[3], unpack(ids))
  for i = first, last do
    local j = (i - 1) * 4
    local oid, who, points, state = claims[j + 1], claims[j + 2], claims[j + 3], claims[j + 4]
    local rec = recs[i - first + 1]
    local old = nil
    if rec then old = string.match(rec, '^%d+|(%a)|') end
    local old_rank = old and RANK[old] or 0
    if RANK[state] > old_rank then
      if old == 'p' or old == 'c' then bal(old .. ':' .. who, -points) end
      if state == 'p' or state == 'c' then bal(state .. ':' .. who, points) end
      if state == 'r' then
        spent_delta = spent_delta - points
        tok_delta[who] = (tok_delta[who] or 0) - 1
      end
      lc_out[#lc_out + 1] = oid
      lc_out[#lc_out + 1] = points .. '|' .. state .. '|' .. who
      touched[who] = true
    end
  end
  if #lc_out > 0 then redis.call('HSET', KEYS[3], unpack(lc_out)); lc_out = {} end
end

-- balances: one read and one write (fields that reach zero are dropped)
local fields = {}
for f, d in pairs(bal_delta) do
  if d ~= 0 then fields[#fields + 1] = f end
end
for first = 1, #fields, CHUNK do
  local part = {}
  for k = first, math.min(#fields, first + CHUNK - 1) do part[#part + 1] = fields[k] end
  local cur = redis.call('HMGET', KEYS[4], unpack(part))
  local put, gone = {}, {}
  for k = 1, #part do
    local v = (tonumber(cur[k]) or 0) + bal_delta[part[k]]
    if v == 0 then gone[#gone + 1] = part[k]
    else put[#put + 1] = part[k]; put[#put + 1] = v end
  end
  if #put > 0 then redis.call('HSET', KEYS[4], unpack(put)) end
  if #gone > 0 then redis.call('HDEL', KEYS[4], unpack(gone)) end
end
if has_budget and spent_delta ~= 0 then redis.call('HINCRBY', KEYS[1], 'spent', spent_delta) end
if tonumber(ARGV[5]) == 1 then redis.call('HINCRBY', KEYS[1], 'relver', 1) end
local out = {}
if has_cap then
  for who, d in pairs(tok_delta) do
    if d ~= 0 then
      local v = redis.call('HINCRBY', KEYS[2], who, d)
      if v == 0 then redis.call('HDEL', KEYS[2], who) end
    end
  end
  for who, _ in pairs(touched) do
    out[#out + 1] = who
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], who)) or 0
  end
end
return cmsgpack.pack(out)
