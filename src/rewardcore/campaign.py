"""Campaign files: TOML decoded by msgspec, then checked as DESIGN.md says.

`load_campaign` returns a `Campaign`: the decoded file plus the flat, typed tables the
engines index (region code -> row, tiers per region). Every error names the field, and the
region code or prize id it belongs to.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import numpy as np

from .errors import ConfigError
from .outcomes import Outcome

NonNeg = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Tier(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    upto: Positive
    points: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class CampaignInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,64}$")]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    beneficiary: Literal["agent", "merchant"] = "agent"
    on_close: Literal["release", "forfeit"] = "release"
    settle_on: Literal["completed", "placed"] = "completed"
    budget_points: NonNeg = 0
    min_paid_cents: NonNeg = 0
    max_claims_per_beneficiary: NonNeg = 0
    max_claims_per_beneficiary_per_region: NonNeg = 0


class Defaults(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    slots: Positive = 1
    tiers: tuple[Tier, ...] = (Tier(upto=1, points=10),)


class RegionSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    code: Annotated[int, msgspec.Meta(ge=-(2**63 - 1), le=2**63 - 1)]
    slots: Positive | None = None
    tiers: tuple[Tier, ...] | None = None


class Prize(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    name: str
    # A prize that costs nothing could be drained without any points: not a valid campaign.
    cost_points: Positive
    value_cents: NonNeg
    stock: NonNeg


class CampaignFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    campaign: CampaignInfo
    regions: tuple[RegionSpec, ...]
    defaults: Defaults = Defaults()
    prizes: tuple[Prize, ...] = ()


class Region(msgspec.Struct, frozen=True):
    """A region with its defaults applied."""

    code: int
    slots: int
    tiers: tuple[Tier, ...]

    def points_for(self, slot: int) -> int:
        """Points of 1-based `slot`: the first tier with slot <= upto."""
        for tier in self.tiers:
            if slot <= tier.upto:
                return tier.points
        raise ValueError(f"slot {slot} is past the last tier of region {self.code}")


def _epoch_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class Campaign:
    """A validated campaign and the typed tables the engines read."""

    def __init__(self, spec: CampaignFile, source: str = "<campaign>") -> None:
        self.spec = spec
        self.source = source
        info = spec.campaign
        self.id = info.id
        self.info = info
        self.starts_ms = _epoch_ms(info.starts_at)
        self.ends_ms = _epoch_ms(info.ends_at)
        self.regions: tuple[Region, ...] = tuple(
            Region(
                code=r.code,
                slots=r.slots if r.slots is not None else spec.defaults.slots,
                tiers=r.tiers if r.tiers is not None else spec.defaults.tiers,
            )
            for r in spec.regions
        )
        self.region_by_code = {r.code: r for r in self.regions}
        self.prizes = spec.prizes
        self.prize_by_id = {p.id: p for p in spec.prizes}
        _validate(self)

        # Flat tables for the compiled engines: row i is self.regions[i].
        self.region_codes = np.array([r.code for r in self.regions], dtype=np.int64)
        self.region_slots = np.array([r.slots for r in self.regions], dtype=np.int32)
        tier_counts = np.array([len(r.tiers) for r in self.regions], dtype=np.int32)
        self.tier_offsets = np.zeros(len(self.regions) + 1, dtype=np.int32)
        np.cumsum(tier_counts, out=self.tier_offsets[1:])
        self.tier_upto = np.array(
            [t.upto for r in self.regions for t in r.tiers], dtype=np.int32
        )
        self.tier_points = np.array(
            [t.points for r in self.regions for t in r.tiers], dtype=np.int32
        )

    # Enum settings as booleans, the form the engines test.
    @property
    def pays_merchant(self) -> bool:
        return self.info.beneficiary == "merchant"

    @property
    def releases(self) -> bool:
        return self.info.on_close == "release"

    @property
    def settles_on_placed(self) -> bool:
        return self.info.settle_on == "placed"

    @property
    def total_slots(self) -> int:
        return int(self.region_slots.sum())

    def placed_outcome(self, ts: int, region: int, paid_cents: int) -> Outcome | None:
        """Checks 3-5 of DESIGN.md, the ones that need no state, in their order: the outcome
        when a placed order is outside the window, not in a reward region or below the
        minimum paid; None when it goes on to the caps and slot choice. (The compiled engines
        make the same checks in C: rc_prepare_placed in ext/rc_rules.pxi.)"""
        if not self.starts_ms <= ts < self.ends_ms:
            return Outcome.OUTSIDE_WINDOW
        if region not in self.region_by_code:
            return Outcome.NO_REWARD_REGION
        if paid_cents < self.info.min_paid_cents:
            return Outcome.BELOW_MIN_PAID
        return None

    def max_awardable_points(self) -> int:
        """Points awarded if every slot of every region is taken once."""
        return sum(r.points_for(s) for r in self.regions for s in range(1, r.slots + 1))

    def __repr__(self) -> str:
        return f"Campaign({self.id!r}, regions={len(self.regions)}, prizes={len(self.prizes)})"


def _validate(c: Campaign) -> None:
    info = c.info
    if info.ends_at <= info.starts_at:
        raise ConfigError(
            f"{c.source}: campaign.ends_at ({info.ends_at.isoformat()}) must be after "
            f"campaign.starts_at ({info.starts_at.isoformat()})"
        )
    if not c.regions:
        raise ConfigError(f"{c.source}: regions: a campaign needs at least one [[regions]] table")
    _check_tiers(c.source, "defaults", c.spec.defaults.slots, c.spec.defaults.tiers)
    seen: dict[int, int] = {}
    for i, r in enumerate(c.regions):
        if r.code in seen:
            raise ConfigError(
                f"{c.source}: regions[{i}].code: region code {r.code} repeats "
                f"(first at regions[{seen[r.code]}])"
            )
        seen[r.code] = i
        _check_tiers(c.source, f"regions[{i}] (code {r.code})", r.slots, r.tiers)
    prize_seen: dict[str, int] = {}
    for i, p in enumerate(c.prizes):
        if p.id in prize_seen:
            raise ConfigError(
                f"{c.source}: prizes[{i}].id: prize id {p.id!r} repeats "
                f"(first at prizes[{prize_seen[p.id]}])"
            )
        prize_seen[p.id] = i


def _check_tiers(source: str, where: str, slots: int, tiers: tuple[Tier, ...]) -> None:
    if not tiers:
        raise ConfigError(f"{source}: {where}.tiers: at least one tier is needed")
    for j in range(1, len(tiers)):
        if tiers[j].upto <= tiers[j - 1].upto:
            raise ConfigError(
                f"{source}: {where}.tiers[{j}].upto: tiers must be strictly increasing in "
                f"upto ({tiers[j - 1].upto} then {tiers[j].upto})"
            )
    if tiers[-1].upto < slots:
        raise ConfigError(
            f"{source}: {where}.tiers[{len(tiers) - 1}].upto: the last tier covers slots up to "
            f"{tiers[-1].upto} but the region has {slots} slots"
        )


def _msgspec_where(exc: msgspec.ValidationError, spec_bytes: bytes) -> str:
    """msgspec says `... - at `$.regions[3].slots``; add the region code or prize id."""
    msg = str(exc)
    try:
        raw = msgspec.toml.decode(spec_bytes)
    except msgspec.DecodeError:
        return msg
    for table, key in (("regions", "code"), ("prizes", "id")):
        marker = f"$.{table}["
        if marker in msg:
            idx = msg.split(marker, 1)[1].split("]", 1)[0]
            try:
                item = raw[table][int(idx)]
                return f"{msg} ({table[:-1]} {key} {item.get(key)!r})"
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                return msg
    return msg


def parse_campaign(data: bytes | str, source: str = "<campaign>") -> Campaign:
    """Decode and validate a campaign from TOML text."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        spec = msgspec.toml.decode(raw, type=CampaignFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_msgspec_where(exc, raw)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return Campaign(spec, source)


def load_campaign(path: str | Path) -> Campaign:
    """Load and validate a campaign TOML file; raises ConfigError naming the bad field."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read campaign file: {exc.strerror}") from None
    return parse_campaign(data, str(p))
