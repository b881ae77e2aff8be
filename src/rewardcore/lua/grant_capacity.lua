-- grant_capacity: step L1 of a batch round, on the ledger. Walks the round's items in the
-- batch's order and grants each new order what it may need from the campaign-wide limits:
-- one claim token of its beneficiary's cap and up to the largest tier points of its region
-- from the budget. Granted capacity counts as spent until settle_claims returns what was
-- not used, so concurrent clients can never over-award together.
-- An order whose need cannot be granted in full while an earlier item could still change
-- the answer is deferred to the next round, and so is every later item that could depend
-- on it (same region, same beneficiary, and budget spending and closes when nothing was
-- left to set aside for it). So in one process every decision equals the sequential reference.
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
-- ARGV[4] the items, MessagePack: a flat array, 5 per item: kind (p = new order,
--         c = closed, d = completed), order_id, region code (a string), beneficiary (p),
--         "maxpoints:minpositivepoints" of the region (p)
-- Reply: MessagePack array, one value per item: "-" = deferred to the next round; for p: the points
--   allowance (-1 = no budget) or "#6" = the beneficiary cap is reached; for c, d: ""
local budget = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local gid = ARGV[3]
local items = cmsgpack.unpack(ARGV[4])
local n = #items / 5

local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
local pool0 = budget - spent
local rem = pool0          -- not granted, not set aside for deferred orders

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
local freed_pts = 0        -- points closes of this batch may give back (an upper bound)
local freed_tok = {}
local seen_any = false
local budget_tainted = false
local t_region, t_who = {}, {}
local granted_here = {}   -- order_id -> {beneficiary, points at most} granted this round
local out = {}
local bal_delta = {}

for i = 1, n do
  local base = (i - 1) * 5
  local kind, oid, region, who, need =
    items[base + 1], items[base + 2], items[base + 3], items[base + 4], items[base + 5]
  local verdict = nil
  if kind == 'd' then
    if t_region[region] then verdict = '-' else verdict = '' end
  elseif kind == 'c' then
    local rec = redis.call('HGET', KEYS[3], oid)
    local points, state, cwho
    if rec then
      points, state, cwho = string.match(rec, '^(%d+)|(%a)|(.*)$')
      points = tonumber(points)
    elseif granted_here[oid] then
      -- its claim may be created earlier in this very round
      cwho, points, state = granted_here[oid][1], granted_here[oid][2], 'n'
    end
    -- no record: the order has no claim (or one whose award a dead client never settled;
    -- taking it as none only changes a no-award label, never awards)
    local active = cwho ~= nil and state ~= 'r'
    -- a close could hand a deferred order capacity it must not see yet: its
    -- beneficiary's token, or budget when none could be set aside for it
    if t_region[region] or budget_tainted or (cwho and t_who[cwho]) then
      verdict = '-'
      if active then
        t_who[cwho] = true
        freed_pts = freed_pts + points
      end
    else
      verdict = ''
      if state == 'p' or state == 'c' then
        local f = state .. ':' .. cwho
        bal_delta[f] = (bal_delta[f] or 0) - points
        redis.call('HSET', KEYS[3], oid, points .. '|x|' .. cwho)
      end
      if active then
        freed_pts = freed_pts + points
        freed_tok[cwho] = (freed_tok[cwho] or 0) + 1
      end
    end
  else
    local maxp, minp = string.match(need, '^(%d+):(%d+)$')
    maxp = tonumber(maxp); minp = tonumber(minp)
    local defer = t_region[region] or t_who[who]
    if not defer and cap > 0 and cap - tokens_out(who) - (granted_tok[who] or 0) < 1 then
      if (granted_tok[who] or 0) == 0 and (freed_tok[who] or 0) == 0 then
        verdict = '#6'      -- at the cap before this batch, and nothing here frees a claim
      else
        defer = true
      end
    end
    local allowance = -1
    if not defer and verdict == nil and budget > 0 then
      if maxp == 0 then
        allowance = 0
      elseif rem >= maxp and not budget_tainted then
        allowance = maxp
      elseif not seen_any then
        allowance = math.max(rem, 0)   -- first of the round: the pool is exact
      elseif pool0 + freed_pts < minp then
        allowance = 0                  -- no positive tier can fit, whatever came before
      else
        defer = true
      end
    end
    if defer then
      verdict = '-'
      t_who[who] = true
      if budget > 0 and maxp > 0 then
        if rem >= maxp and not budget_tainted then
          rem = rem - maxp             -- set its worst case aside
        else
          budget_tainted = true        -- later orders may not spend what it might need
        end
      end
    elseif verdict == nil then
      granted_here[oid] = {who, math.max(allowance, maxp)}
      if cap > 0 then granted_tok[who] = (granted_tok[who] or 0) + 1 end
      if allowance > 0 then
        granted_pts = granted_pts + allowance
        rem = rem - allowance
      end
      verdict = allowance
    end
  end
  if verdict == '-' then t_region[region] = true end
  seen_any = true
  out[i] = verdict
end

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
return cmsgpack.pack(out)
