"""Prometheus metrics of one daemon, in a registry of its own.

Outcome counts are kept in a plain list that each engine batch adds to (one bincount for a
large batch), and are turned into metric families only when /metrics is scraped: the hot
path never takes prometheus-client's per-child locks per event.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..engine import Decisions
from ..events import Event, Placed
from ..outcomes import REDEEM_OUTCOMES, Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_N_OUTCOMES = len(Outcome)
_SOLD_OUT = int(Outcome.SOLD_OUT)
_AWARDED = int(Outcome.AWARDED)
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class Metrics:
    """Every metric the daemon exports; `record` is called once per engine batch."""

    def __init__(self, campaign_id: str, backend: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.outcomes = [0] * _N_OUTCOMES  # by Outcome code
        # Regions whose latest `placed` was answered sold_out (True) or awarded (False).
        # Kept from decisions, so it costs every backend the same and needs no engine call.
        self.sold_out: dict[int, bool] = {}
        self.registry.register(_EngineCollector(self, campaign_id, backend))
        r = self.registry
        self.dead_letters = Counter("rewardcore_dead_letters", "Events rejected and kept as "
                                    "dead letters, by where they came from", ["source"],
                                    registry=r)
        for source in ("http", "stream"):  # series exist from the start, at 0
            self.dead_letters.labels(source)
        self.batch_seconds = Histogram("rewardcore_batch_seconds", "Time of one engine call "
                                       "(a merged batch)", buckets=_LATENCY_BUCKETS, registry=r)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    """Metric families built at scrape time from the daemon's counters."""

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
