"""Event schema: tagged msgspec Structs, one union, decoders built once.

Field limits keep every number inside int64 so all engines (C arrays, Lua doubles for ids
aside) agree, and a huge number is rejected with the field's name instead of wrapping.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

INT64_MAX = 2**63 - 1

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Ts = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Cents = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
RegionCode = Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)]
Qty = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]

_opts = dict(tag_field="type", forbid_unknown_fields=False, gc=False, frozen=True)


class Placed(msgspec.Struct, tag="placed", **_opts):
    """An order placed into a region; the candidate for a claim."""

    order_id: Id
    merchant_id: Id
    agent_id: Id
    region: RegionCode
    paid_cents: Cents
    ts: Ts


class Closed(msgspec.Struct, tag="closed", **_opts):
    """The order was closed (cancelled, refunded): its claim is revoked."""

    order_id: Id
    ts: Ts


class Completed(msgspec.Struct, tag="completed", **_opts):
    """The order completed: its pending claim is confirmed."""

    order_id: Id
    ts: Ts


class Redeem(msgspec.Struct, tag="redeem", **_opts):
    """Spend confirmed points on a prize; idempotent by redemption_id."""

    redemption_id: Id
    beneficiary: Id
    prize: Id
    ts: Ts
    qty: Qty = 1


Event = Placed | Closed | Completed | Redeem
