"""Rehearse a campaign: a synthetic peak day through the real memory engine.

The stream comes from `rewardcore.traffic.generate` (Zipf-popular regions, Zipf-active
participants, a midnight spike, closes, completions, redeliveries, redemptions after the
window); the engine is the compiled one the order gateway embeds, so the outcome is what
the campaign's rules do to that traffic, not an estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from ..backends import open_engine
from ..campaign import Campaign
from ..codec import decode_jsonl
from ..engine import Engine
from ..errors import RewardcoreError
from ..traffic import TrafficShape, beneficiaries, generate, population
from .lint import Finding
from .risk import OrderStream, RiskConfig, risk_findings
from .stats import ReviewData, Tracker, collect


class Simulation(msgspec.Struct):
    """A finished rehearsal: the engine (still open, for checks), its data and timings."""

    engine: Engine
    data: ReviewData
    shape: TrafficShape
    events: int
    #: distinct participants who placed at least one order
    active: int
    seconds: float
    #: risk findings of the run's claims and orders (docs/campaign-checks.md)
    risks: list[Finding] = msgspec.field(default_factory=list)


def simulate(campaign: Campaign, shape: TrafficShape, batch: int = 4096,
             backend: str | None = None, progress: Callable[[int], object] | None = None,
             risk: RiskConfig | None = None) -> Simulation:
    """Feed `shape`'s synthetic stream through a fresh memory engine, `batch` events at a time.

    `progress` is called with the number of events of each batch applied. The caller
    closes `result.engine`.
    """
    if batch < 1:
        raise RewardcoreError(f"simulate: batch must be at least 1, got {batch}")
    engine = open_engine(campaign, backend or f"memory://?orders={shape.orders}")
    tracker = Tracker(campaign)
    stream = OrderStream(campaign, risk)
    events = 0
    start = time.perf_counter()
    try:
        for chunk in generate(campaign, shape):
            decoded, dead = decode_jsonl(chunk)
            if dead:  # the generator writes valid events only; anything else is a bug
                raise RewardcoreError(f"simulate: generated event rejected: {dead[0].reason}")
            for i in range(0, len(decoded), batch):
                part = decoded[i:i + batch]
                decisions = engine.apply(part)
                tracker.add(part, decisions)
                stream.add(part, decisions)
                events += len(part)
                if progress is not None:
                    progress(len(part))
        seconds = time.perf_counter() - start
        agents, merchants = population(campaign, shape)
        data = collect(engine, beneficiaries(shape), tracker=tracker,
                       orders_by_region=stream.orders_by_region,
                       population={"agents": agents, "merchants": merchants})
        risks = risk_findings(campaign, engine.claims(), stream)
    except BaseException:
        engine.close()
        raise
    return Simulation(engine=engine, data=data, shape=shape, events=events,
                      active=len(tracker.placers), seconds=seconds, risks=risks)
