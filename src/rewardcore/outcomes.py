"""Outcome codes shared by every engine.

This is the one source of the codes: the compiled engines' copies (ext/rc_outcomes.pxi,
ext/rc_outcome_codes.pxi) and the Redis scripts' (lua/_constants.lua) are generated from it
by tools/gen_*.py, and tests check they are current. The numbering is part of the compiled
engines' ABI and of saved state: append new codes, never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class Outcome(IntEnum):
    # placed, in the reference order of checks (DESIGN.md)
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
    # closed
    REVOKED = 10
    TOMBSTONED = 11
    # completed
    CONFIRMED = 12
    # closed or completed that changes nothing
    UNCHANGED = 13
    # redeem
    REDEEMED = 14
    UNKNOWN_PRIZE = 15
    INSUFFICIENT_POINTS = 16
    OUT_OF_STOCK = 17

    @property
    def label(self) -> str:
        """The lower-case name used in exported state and APIs."""
        return self.name.lower()

    def __str__(self) -> str:  # print(outcome) shows "sold_out", not 8
        return self.label

    def __format__(self, spec: str) -> str:  # f"{outcome}" too (int's would show the code)
        return format(self.label, spec)


#: Outcomes a `placed` event can have; these are counted in the exported `outcomes`.
PLACED_OUTCOMES = tuple(Outcome)[: Outcome.BUDGET_EXHAUSTED + 1]
#: Outcomes of a `redeem` event.
REDEEM_OUTCOMES = (
    Outcome.REDEEMED,
    Outcome.UNKNOWN_PRIZE,
    Outcome.INSUFFICIENT_POINTS,
    Outcome.OUT_OF_STOCK,
)
LABELS = tuple(o.label for o in Outcome)
