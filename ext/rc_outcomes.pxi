# GENERATED FROM src/rewardcore/outcomes.py BY tools/gen_cython_constants.py, DO NOT MODIFY.
# Outcome codes in C (append, never renumber).
cdef enum:
    AWARDED = 0
    DUPLICATE = 1
    CLOSED = 2
    OUTSIDE_WINDOW = 3
    NO_REWARD_REGION = 4
    BELOW_MIN_PAID = 5
    BENEFICIARY_CAP = 6
    BENEFICIARY_REGION_CAP = 7
    SOLD_OUT = 8
    BUDGET_EXHAUSTED = 9
    REVOKED = 10
    TOMBSTONED = 11
    CONFIRMED = 12
    UNCHANGED = 13
    REDEEMED = 14
    UNKNOWN_PRIZE = 15
    INSUFFICIENT_POINTS = 16
    OUT_OF_STOCK = 17
    N_OUTCOMES = 18
