"""Prometheus metrics of one daemon, in a registry of its own (names: docs/operations.md).

Outcome counts are kept in a plain list that each engine batch adds to (one bincount for a
large batch), and are turned into metric families only when /metrics is scraped: the hot
path never takes prometheus-client's per-child locks per event. The campaign gauges (budget,
stock, regions, claims, points) come from the engine's `summary()`, read once per scrape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..campaign import Campaign
from ..engine import Decisions, Summary
from ..events import Event, Placed
from ..outcomes import REDEEM_OUTCOMES, Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_N_OUTCOMES = len(Outcome)
_SOLD_OUT = int(Outcome.SOLD_OUT)
_AWARDED = int(Outcome.AWARDED)
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)

#: Open regions are listed one by one (`rewardcore_campaign_region_slots_left{region}`) only
#: while at most a tenth of the regions (or this many) are open: the stragglers an operator
#: looks for near the end (the RegionNeverSellsOut alert watches them once 90% are sold
#: out), without a series per region for the whole campaign.
STRAGGLERS = 32


def straggler_limit(regions: int) -> int:
    return max(STRAGGLERS, regions // 10)

#: Dead letters by reason class (a fixed set, so the label stays small). First match wins.
DEAD_LETTER_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("poison", re.compile(r"^delivered \d+ times")),
    ("missing", re.compile(r"deleted from the stream|has no field 'e'")),
    ("malformed", re.compile(r"malformed|truncated|not an? \S+ array|UTF-?8|nest|recursion|"
                             r"depth", re.IGNORECASE)),
    ("invalid", re.compile(r"Expected|required field|unknown field|Invalid|out of range|"
                           r"must be")),
)
REASON_CLASSES = (*(name for name, _ in DEAD_LETTER_CLASSES), "other")


def reason_class(reason: str) -> str:
    """The class of a dead letter's reason: malformed (not decodable), invalid (decoded but a
    field is wrong, missing or unknown), missing (a stream entry with no event), poison (a
    stream entry delivered too often), or other."""
    for name, pattern in DEAD_LETTER_CLASSES:
        if pattern.search(reason):
            return name
    return "other"


class Metrics:
    """Every metric the daemon exports; `record` is called once per engine batch."""

    def __init__(self, campaign: Campaign, backend: str, engine: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.outcomes = [0] * _N_OUTCOMES  # by Outcome code
        # Regions whose latest `placed` was answered sold_out (True) or awarded (False).
        # Kept from decisions, so it costs every backend the same and needs no engine call.
        self.sold_out: dict[int, bool] = {}
        #: the engine's latest summary, refreshed by the /metrics handler before a render
        self.summary: Summary | None = None
        self.campaign = campaign
        r = self.registry
        r.register(_EngineCollector(self, campaign.id, backend))
        # The standard collectors (process_*: CPU, memory, descriptors; python_*): the same
        # objects prometheus-client registers globally, here in the daemon's own registry.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.dead_letters = Counter("rewardcore_dead_letters", "Events rejected and kept as "
                                    "dead letters, by where they came from and the class of "
                                    "the reason", ["source", "reason"], registry=r)
        for source in ("http", "stream"):  # series exist from the start, at 0
            for cls in REASON_CLASSES:
                self.dead_letters.labels(source, cls)
        engine = engine or backend.partition("://")[0]
        self.batch_seconds = Histogram("rewardcore_batch_seconds", "Time of one engine call "
                                       "(a merged batch), by engine", ["engine"],
                                       buckets=_LATENCY_BUCKETS, registry=r).labels(engine)
        self.batch_events = Histogram("rewardcore_batch_events", "Events in one engine call",
                                      buckets=_SIZE_BUCKETS, registry=r)
        self.requests = Counter("rewardcore_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("rewardcore_http_request_seconds", "Time to answer "
                                         "POST /v1/events", buckets=_LATENCY_BUCKETS, registry=r)
        self.stream_lag = Gauge("rewardcore_stream_lag", "Entries of the source stream not yet "
                                "delivered to the consumer group (XINFO GROUPS lag)",
                                ["stream", "group"], registry=r)
        self.stream_pending = Gauge("rewardcore_stream_pending", "Entries delivered to the group "
                                    "but not acknowledged", ["stream", "group"], registry=r)
        self.stream_entries = Counter("rewardcore_stream_entries", "Source stream entries "
                                      "acknowledged, by result", ["result"], registry=r)
        for result in ("applied", "dead_lettered", "taken_over"):
            self.stream_entries.labels(result)
        self.engine_errors = Counter("rewardcore_engine_errors", "Engine calls that raised",
                                     registry=r)

    def record(self, events: Sequence[Event], decisions: Decisions, seconds: float) -> None:
        outcome = decisions.outcome
        self.batch_seconds.observe(seconds)
        self.batch_events.observe(len(events))
        counts = self.outcomes
        marks = self.sold_out
        if len(outcome) <= 16:
            # A few events (single-order requests): plain Python beats numpy's call costs.
            for ev, o in zip(events, outcome.tolist(), strict=True):
                counts[o] += 1
                if o in (_SOLD_OUT, _AWARDED) and type(ev) is Placed:
                    marks[ev.region] = o == _SOLD_OUT
            return
        for o, n in enumerate(np.bincount(outcome, minlength=_N_OUTCOMES).tolist()):
            if n:
                counts[o] += n
        sold = np.flatnonzero(outcome == _SOLD_OUT).tolist()
        awarded = np.flatnonzero(outcome == _AWARDED).tolist()
        # In arrival order, so the later of an award and a sold_out in one batch wins.
        for i in sorted(sold + awarded) if sold and awarded else sold or awarded:
            ev = events[i]
            if type(ev) is Placed:
                marks[ev.region] = outcome[i] == _SOLD_OUT

    def count_dead_letters(self, source: str, reasons: Sequence[str]) -> None:
        by_class: dict[str, int] = {}
        for reason in reasons:
            cls = reason_class(reason)
            by_class[cls] = by_class.get(cls, 0) + 1
        for cls, n in by_class.items():
            self.dead_letters.labels(source, cls).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    """Metric families built at scrape time from the daemon's counters and the engine's
    latest summary."""

    def __init__(self, metrics: Metrics, campaign_id: str, backend: str) -> None:
        self.m = metrics
        self.campaign_id = campaign_id
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        counts = self.m.outcomes
        info = GaugeMetricFamily("rewardcore_info", "The campaign and backend this daemon "
                                 "serves", labels=["campaign", "backend"])
        info.add_metric([self.campaign_id, self.backend], 1)
        yield info
        events = CounterMetricFamily("rewardcore_events", "Events applied, by outcome",
                                     labels=["outcome"])
        for o in Outcome:
            events.add_metric([o.label], counts[o])
        yield events
        yield CounterMetricFamily("rewardcore_claims", "Claims awarded",
                                  value=counts[Outcome.AWARDED])
        yield CounterMetricFamily("rewardcore_revocations", "Claims revoked by a closed order",
                                  value=counts[Outcome.REVOKED])
        yield CounterMetricFamily("rewardcore_confirmations", "Pending claims confirmed by a "
                                  "completed order", value=counts[Outcome.CONFIRMED])
        redemptions = CounterMetricFamily("rewardcore_redemptions", "Redemptions, by outcome",
                                          labels=["outcome"])
        for o in REDEEM_OUTCOMES:
            redemptions.add_metric([o.label], counts[o])
        yield redemptions
        yield GaugeMetricFamily("rewardcore_sold_out_regions", "Regions whose latest placed "
                                "order was answered sold_out",
                                value=sum(self.m.sold_out.values()))
        if self.m.summary is not None:
            yield from _campaign_families(self.m.campaign, self.m.summary)


def _campaign_families(c: Campaign, s: Summary) -> Iterator[Metric]:
    """The campaign's state as the engine holds it. With a shared engine (redis://) every
    daemon reports the same figures: aggregate them with max, not sum."""
    budget = c.info.budget_points
    yield GaugeMetricFamily("rewardcore_campaign_budget_points", "The campaign's budget in "
                            "points (0: no budget)", value=budget)
    if s.budget_used is not None:
        yield GaugeMetricFamily("rewardcore_campaign_budget_used_points", "Points of "
                                "non-revoked claims (what the budget measures)",
                                value=s.budget_used)
        if budget:
            yield GaugeMetricFamily("rewardcore_campaign_budget_left_points", "Budget points "
                                    "not yet awarded", value=budget - s.budget_used)
    stock = GaugeMetricFamily("rewardcore_campaign_prize_stock", "Units of each prize left",
                              labels=["prize"])
    for prize, left in s.stock.items():
        stock.add_metric([prize], left)
    yield stock
    n_open = sum(1 for left in s.slots_left if left > 0)
    regions = GaugeMetricFamily("rewardcore_campaign_regions", "Reward regions that can still "
                                "award a slot (open) and those that cannot (sold_out)",
                                labels=["state"])
    regions.add_metric(["open"], n_open)
    regions.add_metric(["sold_out"], len(s.slots_left) - n_open)
    yield regions
    limit = straggler_limit(len(s.slots_left))
    stragglers = GaugeMetricFamily("rewardcore_campaign_region_slots_left", "Slots left in each "
                                   f"open region, listed only while at most {limit} are open",
                                   labels=["region"])
    if n_open <= limit:
        for region, left in zip(c.regions, s.slots_left, strict=True):
            if left > 0:
                stragglers.add_metric([str(region.code)], left)
    yield stragglers
    if s.claims is not None:
        claims = GaugeMetricFamily("rewardcore_campaign_claims", "Claims in each state",
                                   labels=["state"])
        for state, n in s.claims.items():
            claims.add_metric([state], n)
        yield claims
    if s.points is not None:
        points = GaugeMetricFamily("rewardcore_campaign_points", "Points over all "
                                   "beneficiaries, by state", labels=["state"])
        for kind, n in s.points.items():
            points.add_metric([kind], n)
        yield points
    if s.beneficiaries is not None:
        yield GaugeMetricFamily("rewardcore_campaign_beneficiaries", "Beneficiaries holding "
                                "pending or confirmed points", value=s.beneficiaries)
