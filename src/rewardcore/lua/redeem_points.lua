-- redeem_points: redemptions, in order, on the ledger: confirmed minus redeemed points of
-- the beneficiary must cover the cost, the prize must have stock; stock and balance go
-- down together in this one script. Idempotent by redemption id: a repeat returns the
-- first outcome and changes nothing.
--
-- KEYS[1] balances (hash "c:<who>" confirmed, "r:<who>" redeemed points)
-- KEYS[2] units taken per prize (hash prize id -> units)
-- KEYS[3] redemptions (hash redemption id -> "<outcome code>|<points spent>")
-- ARGV[1] MessagePack flat array, 6 per redemption: redemption id, beneficiary, prize id,
--         qty (units), cost of one unit in points (-1 = unknown prize), stock (units)
-- Reply: MessagePack flat array: outcome, points spent, per redemption
local rd = cmsgpack.unpack(ARGV[1])
local n = #rd / 6
local REDEEMED, UNKNOWN_PRIZE, INSUFFICIENT, OUT_OF_STOCK = 14, 15, 16, 17
local out = {}
for i = 1, n do
  local b = (i - 1) * 6
  local rid, who, prize = rd[b + 1], rd[b + 2], rd[b + 3]
  local qty, unit, stock = rd[b + 4], rd[b + 5], rd[b + 6]
  local prev = redis.call('HGET', KEYS[3], rid)
  if prev then
    local o, p = string.match(prev, '^(%d+)|(%d+)$')
    out[#out + 1] = tonumber(o); out[#out + 1] = tonumber(p)
  else
    local outcome, cost = nil, 0
    if unit < 0 then
      outcome = UNKNOWN_PRIZE
    else
      cost = unit * qty
      local conf = tonumber(redis.call('HGET', KEYS[1], 'c:' .. who)) or 0
      local red = tonumber(redis.call('HGET', KEYS[1], 'r:' .. who)) or 0
      local taken = tonumber(redis.call('HGET', KEYS[2], prize)) or 0
      if conf - red < cost then
        outcome = INSUFFICIENT
      elseif stock - taken < qty then
        outcome = OUT_OF_STOCK
      else
        outcome = REDEEMED
        redis.call('HINCRBY', KEYS[2], prize, qty)
        redis.call('HINCRBY', KEYS[1], 'r:' .. who, cost)
      end
      if outcome ~= REDEEMED then cost = 0 end
    end
    redis.call('HSET', KEYS[3], rid, outcome .. '|' .. cost)
    out[#out + 1] = outcome; out[#out + 1] = cost
  end
end
return cmsgpack.pack(out)
