-- rebuild_ledger: the ledger's claim-derived figures recomputed from the claims themselves,
-- for an operator to run while NO client is applying events (after a client died between
-- two steps and left a grant open, which only holds capacity back). Replaces the claim
-- copies, tokens out per beneficiary, budget spent, and pending/confirmed balances; drops
-- open grants. Redeemed points, stock and redemptions are kept as they are.
--
-- KEYS[1] ledger scalars   KEYS[2] tokens out   KEYS[3] ledger claims
-- KEYS[4] balances         KEYS[5] open grants
-- ARGV[1] MessagePack flat array, 4 per claim (every claim of every region): order_id,
--         beneficiary, points, state (p, c or r)
-- Reply: the number of open grants dropped
local claims = cmsgpack.unpack(ARGV[1])
local dropped = redis.call('HLEN', KEYS[5])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
local bal = redis.call('HGETALL', KEYS[4])
for i = 1, #bal, 2 do
  local kind = string.sub(bal[i], 1, 2)
  if kind == 'p:' or kind == 'c:' then redis.call('HDEL', KEYS[4], bal[i]) end
end
local spent, tokens, sums = 0, {}, {}
for i = 1, #claims / 4 do
  local j = (i - 1) * 4
  local oid, who, points, state = claims[j + 1], claims[j + 2], claims[j + 3], claims[j + 4]
  redis.call('HSET', KEYS[3], oid, points .. '|' .. state .. '|' .. who)
  if state ~= 'r' then
    spent = spent + points
    tokens[who] = (tokens[who] or 0) + 1
    local f = state .. ':' .. who
    sums[f] = (sums[f] or 0) + points
  end
end
for who, k in pairs(tokens) do redis.call('HSET', KEYS[2], who, k) end
for f, v in pairs(sums) do
  if v ~= 0 then redis.call('HSET', KEYS[4], f, v) end
end
redis.call('HSET', KEYS[1], 'spent', spent)
return dropped
