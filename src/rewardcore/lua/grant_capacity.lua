-- grant_capacity: step L1 of a batch round, on the ledger. Walks the round's new orders
-- (and closes) in the batch's order and grants each order what it may need from the
-- campaign-wide limits: one claim token of its beneficiary's cap and up to the largest
-- tier points of its region from the budget. Granted capacity counts as spent until the
-- settle step returns what was not used, so concurrent clients can never over-award.
-- The walk stops ("cut") at the first order whose need cannot be granted in full while
-- an earlier item of the round could still change the answer; that order then starts the
-- next round, so in one process every decision equals the sequential reference.
-- Also takes the balance of each closed order's claim out first (before the region
-- revokes it), so points of a claim being revoked can never be redeemed.
--
-- KEYS[1] ledger scalars (hash: spent = budget points of non-revoked claims + granted)
-- KEYS[2] tokens out per beneficiary (hash beneficiary -> non-revoked claims + granted)
-- KEYS[3] claims as the ledger applied them (hash order_id -> "points|state|beneficiary",
--         state p pending, c confirmed, x revoking (balance taken out), r revoked)
-- KEYS[4] balances (hash "p:<who>" pending, "c:<who>" confirmed, "r:<who>" redeemed points)
-- KEYS[5] open grants (hash grant id -> cjson {pts=points, tok={who=tokens}})
-- ARGV[1] budget points, 0 = no budget   ARGV[2] claims per beneficiary, 0 = no cap
-- ARGV[3] grant id (unique per client and round)
-- ARGV[4] n items; then 4 per item: kind (p = new order, c = closed), order_id,
--         beneficiary (p), "maxpoints:minpositivepoints" of the order's region (p)
-- Reply: k = items covered by this round, then one value per covered item:
--   p: points allowance (-1 = no budget), or "#6" = beneficiary cap reached;  c: ""
local budget = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local gid = ARGV[3]
local n = tonumber(ARGV[4])

local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
local pool0 = budget - spent

local used0 = {}
local function tokens_out(who)
  local u = used0[who]
  if u == nil then
    u = tonumber(redis.call('HGET', KEYS[2], who)) or 0
    used0[who] = u
  end
  return u
end

local granted_pts = 0
local granted_tok = {}
local freed_pts = 0
local freed_tok = {}
local seen_any = false
local out = {0}
local k = 0
local bal_delta = {}

for i = 1, n do
  local base = 4 + (i - 1) * 4
  local kind, oid, who, need = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  if kind == 'c' then
    local rec = redis.call('HGET', KEYS[3], oid)
    if rec then
      local points, state, cwho = string.match(rec, '^(%d+)|(%a)|(.*)$')
      points = tonumber(points)
      if state == 'p' or state == 'c' then
        local f = state .. ':' .. cwho
        bal_delta[f] = (bal_delta[f] or 0) - points
        redis.call('HSET', KEYS[3], oid, points .. '|x|' .. cwho)
      end
      if state ~= 'r' then
        freed_pts = freed_pts + points
        freed_tok[cwho] = (freed_tok[cwho] or 0) + 1
      end
    end
    -- no record: the order has no claim (or one whose award a dead client never settled;
    -- treating it as none only changes which no-award label an order gets, never awards)
    seen_any = true
    k = i; out[#out + 1] = ''
  else
    local maxp, minp = string.match(need, '^(%d+):(%d+)$')
    maxp = tonumber(maxp); minp = tonumber(minp)
    local verdict = nil   -- nil = grant, 'cut', or '#6'
    if cap > 0 then
      local avail = cap - tokens_out(who) - (granted_tok[who] or 0)
      if avail < 1 then
        if (granted_tok[who] or 0) == 0 and (freed_tok[who] or 0) == 0 then
          verdict = '#6'
        else
          verdict = 'cut'
        end
      end
    end
    local allowance = -1
    if verdict == nil and budget > 0 then
      local rem = pool0 - granted_pts
      if rem >= maxp then
        allowance = maxp
      elseif not seen_any then
        allowance = math.max(rem, 0)   -- first of the round: the pool is exact
      elseif pool0 + freed_pts < minp then
        allowance = 0                  -- no positive tier can fit, whatever came before
      else
        verdict = 'cut'
      end
    end
    if verdict == 'cut' then break end
    if verdict == '#6' then
      out[#out + 1] = '#6'
    else
      if cap > 0 then granted_tok[who] = (granted_tok[who] or 0) + 1 end
      if allowance > 0 then granted_pts = granted_pts + allowance end
      out[#out + 1] = allowance
    end
    seen_any = true
    k = i
  end
end
out[1] = k

for f, d in pairs(bal_delta) do
  local v = redis.call('HINCRBY', KEYS[4], f, d)
  if v == 0 then redis.call('HDEL', KEYS[4], f) end
end
local tok = {}
local any_tok = false
for who, t in pairs(granted_tok) do
  redis.call('HINCRBY', KEYS[2], who, t)
  tok[who] = t; any_tok = true
end
if granted_pts > 0 then redis.call('HINCRBY', KEYS[1], 'spent', granted_pts) end
if granted_pts > 0 or any_tok then
  redis.call('HSET', KEYS[5], gid, cjson.encode({pts = granted_pts, tok = tok}))
end
return out
