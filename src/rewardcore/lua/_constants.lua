-- GENERATED FROM src/rewardcore/outcomes.py and src/rewardcore/_redis_wire.py, DO NOT EDIT.
-- Regenerate with: python tools/gen_lua_constants.py

local AWARDED = 0
local DUPLICATE = 1
local CLOSED = 2
local OUTSIDE_WINDOW = 3
local NO_REWARD_REGION = 4
local BELOW_MIN_PAID = 5
local BENEFICIARY_CAP = 6
local BENEFICIARY_REGION_CAP = 7
local SOLD_OUT = 8
local BUDGET_EXHAUSTED = 9
local REVOKED = 10
local TOMBSTONED = 11
local CONFIRMED = 12
local UNCHANGED = 13
local REDEEMED = 14
local UNKNOWN_PRIZE = 15
local INSUFFICIENT_POINTS = 16
local OUT_OF_STOCK = 17

local BUCKET_PLACED = 1
local BUCKET_CLOSED = 2
local BUCKET_COMPLETED = 3
local NEW_CANDIDATE = -1
local CORE_PLACED = 1
local CORE_PLACED_AGAIN = 5
local CORE_CLOSED = 2
local CORE_COMPLETED = 3
local CORE_REDEEM = 4
local CANDIDATE_IDS = '<I4c0Bc0'
local CALL_CANCELLED = 'cancelled'
local CALL_REPEATED = 'repeated'
local REC_TOMBSTONE = 'T'
local REC_EARLY = 'E'
local REC_DONE = '-'
local REC_ROUTED = 'R'
local BUCKET_HEADER_FIELD = ''
local BUCKET_HEADER = 'rewardcore order bucket: order id -> record, first character: T tombstone, E completed early, - decided, R routed to the core'
local REGION_FORMAT = '<I4I4I4d'
local REGION_STRUCT = '<IIId'
local REGION_REC = 20
local OTHER_REGIONS = "the stored regions were written for another region list or by another version of rewardcore: reset the campaign's state (rewardcore reset) or give the campaign another id"
local BENEFICIARY_FORMAT = '<dddd'
local BENEFICIARY_REC = 32
local NOTE_DECIDED = 'D'
local NOTE_EARLY = 'E'
