"""Event schema: tagged msgspec Structs, one union, decoders built once.

Field limits keep every number inside int64 so all engines (C arrays, Lua doubles for ids
aside) agree, and a huge number is rejected with the field's name instead of wrapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, NamedTuple

import msgspec
import msgspec.inspect

from .errors import EventError

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


# -- validation of events built by hand --------------------------------------------------------
#
# The decoders validate what they decode; a library caller may build Structs directly, which
# msgspec does not validate at construction. `validate_batch` applies the same limits (read from
# the annotations above, so they are written once) to a whole batch before an engine changes
# anything. The compiled engines check the same rules in their first pass (ext/rc_read.pxi reads
# FIELD_RULES) and call `check_event` to word the error.


class FieldRule(NamedTuple):
    """One field's rule: a str of min..max characters, or an int in min..max."""

    name: str
    is_str: bool
    min: int
    max: int


def _rules_of(cls: type[msgspec.Struct]) -> tuple[FieldRule, ...]:
    rules = []
    for f in msgspec.inspect.type_info(cls).fields:  # type: ignore[attr-defined]
        t = f.type
        if isinstance(t, msgspec.inspect.StrType):
            rules.append(FieldRule(f.name, True, t.min_length or 0, t.max_length or INT64_MAX))
        elif isinstance(t, msgspec.inspect.IntType):
            lo = t.ge if t.ge is not None else -INT64_MAX - 1
            hi = t.le if t.le is not None else INT64_MAX
            rules.append(FieldRule(f.name, False, lo, hi))
        else:  # pragma: no cover - a new field type needs a rule here and in ext/rc_read.pxi
            raise TypeError(f"{cls.__name__}.{f.name}: no validation rule for {t!r}")
    return tuple(rules)


#: Event class -> its fields' rules, in field order (the order errors are found in).
FIELD_RULES: dict[type, tuple[FieldRule, ...]] = {
    cls: _rules_of(cls) for cls in (Placed, Closed, Completed, Redeem)
}
_TYPE_NAME = {Placed: "placed", Closed: "closed", Completed: "completed", Redeem: "redeem"}


def _refuse(i: int, field: str | None, message: str) -> EventError:
    err = EventError(f"event {i}: {message}")
    err.index = i
    err.field = field
    return err


def check_event(ev: object, i: int = 0) -> None:
    """Raise EventError (with .index = i and .field) unless `ev` is a valid event."""
    rules = FIELD_RULES.get(type(ev))
    if rules is None:
        if isinstance(ev, dict):
            raise _refuse(i, None, "is a dict, not an event: build events from dicts with "
                          "rewardcore.events.events_from_dicts (it validates them)")
        raise _refuse(i, None, f"is not an event: {type(ev).__name__} (want Placed, Closed, "
                      "Completed or Redeem; exactly those classes)")
    kind = _TYPE_NAME[type(ev)]
    for rule in rules:
        v = getattr(ev, rule.name, None)
        if rule.is_str:
            if type(v) is not str:
                raise _refuse(i, rule.name, f"{kind}: field {rule.name!r} must be a str, "
                              f"not {type(v).__name__}")
            if not rule.min <= len(v) <= rule.max:
                raise _refuse(i, rule.name, f"{kind}: field {rule.name!r} must have "
                              f"{rule.min} to {rule.max} characters, not {len(v)}")
        else:
            if type(v) is not int:
                raise _refuse(i, rule.name, f"{kind}: field {rule.name!r} must be an int, "
                              f"not {type(v).__name__}")
            if not rule.min <= v <= rule.max:
                raise _refuse(i, rule.name, f"{kind}: field {rule.name!r} must be within "
                              f"{rule.min} and {rule.max}, not {v}")


def validate_batch(events: Sequence[object]) -> None:
    """Raise EventError naming the first invalid event (its index and field) of the batch."""
    for i, ev in enumerate(events):
        check_event(ev, i)


_EVENT_LIST = list[Event]  # type: ignore[valid-type]


def events_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Events from plain dicts ({"type": "placed", ...}), validated by msgspec as the decoders
    validate them; raises EventError naming the index and field of the first bad one."""
    rows = list(items)
    try:
        return msgspec.convert(rows, _EVENT_LIST)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        where = msg.rsplit("at `$[", 1)
        if len(where) == 2:
            index_text, _, path = where[1].partition("]")
            field = path.strip("`.").split(".")[0] or None
            raise _refuse(int(index_text), field, msg) from None
        raise EventError(f"events: {msg}") from None
