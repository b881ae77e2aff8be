"""Event builders for tests."""

from __future__ import annotations

from rewardcore import Closed, Completed, Placed, Redeem

from .campaigns import IN_WINDOW


def placed(order: str, region: int = 1, agent: str = "a1", merchant: str = "m1",
           paid: int = 100, ts: int = IN_WINDOW) -> Placed:
    return Placed(order_id=order, merchant_id=merchant, agent_id=agent, region=region,
                  paid_cents=paid, ts=ts)


def closed(order: str, ts: int = IN_WINDOW) -> Closed:
    return Closed(order_id=order, ts=ts)


def completed(order: str, ts: int = IN_WINDOW) -> Completed:
    return Completed(order_id=order, ts=ts)


def redeem(rid: str, who: str, prize: str = "mug", qty: int = 1) -> Redeem:
    return Redeem(redemption_id=rid, beneficiary=who, prize=prize, qty=qty, ts=IN_WINDOW)
