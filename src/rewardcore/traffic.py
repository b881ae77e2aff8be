"""Synthetic peak-day traffic for a campaign, as JSON lines.

The shape of a Double-Eleven night, so the engines can be tried without real data:
  - arrivals spike at midnight (the window's start) and decay, over a steady base;
  - regions are Zipf-popular (a few regions take most orders), some orders fall outside
    every reward region, a few arrive before the window opens;
  - participants are Zipf-active; each agent works for one merchant, a merchant has
    `agents_per_merchant` agents; `participants` counts the campaign's beneficiaries (agents,
    or merchants when the campaign pays merchants), so shares of participants mean what
    they say;
  - orders close (revoking their claim) or complete (confirming it) some minutes later;
  - a share of events is delivered twice, as an at-least-once queue would;
  - after the window, active participants try to redeem prizes.
Everything is drawn from one seed, so a stream can be made again exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import numpy as np

from .campaign import Campaign

_MINUTE = 60_000


class TrafficShape(msgspec.Struct, frozen=True, kw_only=True):
    orders: int = 100_000
    #: beneficiaries of the campaign's kind (agents, or merchants for a merchant campaign);
    #: 0: one per 20 orders, at least 100
    participants: int = 0
    agents_per_merchant: int = 5
    seed: int = 0
    close_rate: float = 0.05
    complete_rate: float = 0.8
    redeliver_rate: float = 0.01
    off_region_rate: float = 0.05  # orders into regions that carry no reward
    early_rate: float = 0.005  # orders stamped before the window opens
    spike_share: float = 0.4  # share of orders in the midnight spike
    spike_minutes: float = 3.0  # the spike's decay time
    region_zipf: float = 1.1
    participant_zipf: float = 0.9
    redeem_share: float = 0.05  # participants who try a redemption afterwards


def beneficiaries(shape: TrafficShape) -> int:
    """How many beneficiaries of the campaign's kind the stream draws from."""
    return shape.participants or max(100, shape.orders // 20)


def population(c: Campaign, shape: TrafficShape) -> tuple[int, int]:
    """(agents, merchants) behind the stream. Orders are placed by agents; a merchant has
    `agents_per_merchant` of them, so a merchant campaign with 400 participants has 400
    merchants and 2,000 agents, an agent campaign with 2,000 participants 400 merchants."""
    per = max(1, shape.agents_per_merchant)
    n = beneficiaries(shape)
    if c.pays_merchant:
        return n * per, n
    return n, -(-n // per)


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    rng.shuffle(w)  # popularity is not ordered by code
    return w / w.sum()


def arrival_times(c: Campaign, shape: TrafficShape, rng: np.random.Generator) -> np.ndarray:
    """Sorted order times (epoch ms): a decaying midnight spike over a flat base."""
    n = shape.orders
    window = c.ends_ms - c.starts_ms
    spike = rng.random(n) < shape.spike_share
    offset = np.where(
        spike,
        rng.exponential(shape.spike_minutes * _MINUTE, n),
        rng.random(n) * window,
    )
    offset = np.minimum(offset, window - 1)
    early = rng.random(n) < shape.early_rate
    offset[early] = -rng.random(int(early.sum())) * 60 * _MINUTE - 1
    return np.sort(c.starts_ms + offset.astype(np.int64))


def generate(c: Campaign, shape: TrafficShape | None = None,
             chunk: int = 50_000) -> Iterator[bytes]:
    """Yield the stream as JSON-lines chunks of about `chunk` events, in time order."""
    shape = shape or TrafficShape()
    rng = np.random.default_rng(shape.seed)
    n = shape.orders
    agents, merchants = population(c, shape)  # agents place the orders
    ts = arrival_times(c, shape, rng)
    region = c.region_codes[rng.choice(len(c.region_codes), n,
                                       p=_zipf_weights(len(c.region_codes), shape.region_zipf,
                                                       rng))]
    off = rng.random(n) < shape.off_region_rate
    region[off] = -1 - rng.integers(0, 1000, int(off.sum()))  # codes no campaign uses
    agent = rng.choice(agents, n, p=_zipf_weights(agents, shape.participant_zipf, rng))
    paid = np.maximum(1, rng.lognormal(np.log(5000), 0.8, n)).astype(np.int64)

    # follow-ups: a close or a completion some minutes after the order
    fate = rng.random(n)
    closes = fate < shape.close_rate
    completes = ~closes & (fate < shape.close_rate + shape.complete_rate)
    later = ts + rng.exponential(20 * _MINUTE, n).astype(np.int64) + 1

    # one row per event: (time, kind, order); kind 0 placed, 1 closed, 2 completed
    t_all = np.concatenate([ts, later[closes], later[completes]])
    kind = np.concatenate([np.zeros(n, np.int8), np.ones(int(closes.sum()), np.int8),
                           np.full(int(completes.sum()), 2, np.int8)])
    idx = np.concatenate([np.arange(n), np.flatnonzero(closes), np.flatnonzero(completes)])
    again = rng.random(len(t_all)) < shape.redeliver_rate
    t_all = np.concatenate([t_all, t_all[again] + rng.integers(1, 5_000, int(again.sum()))])
    kind = np.concatenate([kind, kind[again]])
    idx = np.concatenate([idx, idx[again]])
    order = np.argsort(t_all, kind="stable")
    t_all, kind, idx = t_all[order], kind[order], idx[order]

    ts_l, kind_l, idx_l = t_all.tolist(), kind.tolist(), idx.tolist()
    region_l, agent_l, paid_l = region.tolist(), agent.tolist(), paid.tolist()
    per = shape.agents_per_merchant
    out: list[str] = []
    for t, k, i in zip(ts_l, kind_l, idx_l, strict=True):
        if k == 0:
            a = agent_l[i]
            out.append(
                f'{{"type":"placed","order_id":"o{i}","merchant_id":"m{a // per}",'
                f'"agent_id":"a{a}","region":{region_l[i]},"paid_cents":{paid_l[i]},"ts":{t}}}\n'
            )
        else:
            out.append(f'{{"type":"{"closed" if k == 1 else "completed"}","order_id":"o{i}",'
                       f'"ts":{t}}}\n')
        if len(out) >= chunk:
            yield "".join(out).encode()
            out.clear()

    # redemptions after the window, by the most active beneficiaries first
    if c.prizes and shape.redeem_share > 0:
        who_of = agent // per if c.pays_merchant else agent
        n_who, prefix = (merchants, "m") if c.pays_merchant else (agents, "a")
        k = max(1, int(n_who * shape.redeem_share))
        tries = np.argsort(-np.bincount(who_of, minlength=n_who), kind="stable")[:k].tolist()
        prizes = rng.integers(0, len(c.prizes), k).tolist()
        t = c.ends_ms + 1
        for r, (b, p) in enumerate(zip(tries, prizes, strict=True)):
            out.append(f'{{"type":"redeem","redemption_id":"r{r}","beneficiary":"{prefix}{b}",'
                       f'"prize":{msgspec.json.encode(c.prizes[p].id).decode()},"qty":1,'
                       f'"ts":{t + r}}}\n')
    if out:
        yield "".join(out).encode()
