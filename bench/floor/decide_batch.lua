-- The floor of a core call (bench/redis_instructions.py --scripts bench/floor): what
-- decide_batch.lua costs before it decides anything. It unpacks the same arguments, reads
-- nothing, writes nothing and answers every item as sold out. Measured against the real
-- script, it says how much of the core's cost is the price of a Lua call that carries the
-- batch at all.
local regs = cmsgpack.unpack(ARGV[3])
local it = cmsgpack.unpack(ARGV[4])
local wl = cmsgpack.unpack(ARGV[5])
local rare = cmsgpack.unpack(ARGV[7])
local width = {[CORE_PLACED] = 4, [CORE_PLACED_AGAIN] = 7, [CORE_REDEEM] = 7,
               [CORE_CLOSED] = 4, [CORE_COMPLETED] = 4}
local out, n, p = {}, 0, 1
while p <= #it do
  out[n + 1] = SOLD_OUT; out[n + 2] = 0; out[n + 3] = 0; out[n + 4] = 0
  n = n + 4
  p = p + width[it[p]]
end
return cmsgpack.pack(out)
