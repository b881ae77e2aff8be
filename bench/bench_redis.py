"""Redis engine throughput, measured in one run on the same servers:

  1. `redis-benchmark -P 64 -t incr -q`: what this machine's Redis does at all;
  2. claims/s while every claim hits an open region (1,111 regions with room for all);
  3. claims/s once every region is sold out, against the memory engine on the same events;
  4. the open-region run on a Redis Cluster of 1 and of 3 masters.

Starts its own redis-server processes on free ports (tests/servers.py). Not collected by
pytest. Run: python bench/bench_redis.py [--orders 200000] [--batch 4096] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewardcore import Campaign, Placed, load_campaign, open_engine, parse_campaign  # noqa: E402
from rewardcore.examples import example_path  # noqa: E402
from tests.servers import RedisCluster, RedisServer, _cli  # noqa: E402

EXAMPLE = example_path("d11-2026")


def campaign_like_example(slots: int, caps: bool) -> Campaign:
    """The example's 1,111 regions, with `slots` slots each; caps and budget as the example
    (budget scaled so it never binds) or off."""
    ex = load_campaign(EXAMPLE)
    half = max(1, slots // 2)
    lines = ["[campaign]", 'id = "bench-redis"', "starts_at = 2026-11-11T00:00:00+08:00",
             "ends_at = 2026-11-12T00:00:00+08:00", 'on_close = "release"']
    if caps:
        lines += ["budget_points = 4000000000", "max_claims_per_beneficiary = 100",
                  "max_claims_per_beneficiary_per_region = 2", "min_paid_cents = 1000"]
    lines += ["[defaults]", f"slots = {slots}",
              f"tiers = [{{upto = {half}, points = 5}}, {{upto = {slots}, points = 10}}]"
              if slots > 1 else "tiers = [{upto = 1, points = 10}]"]
    for r in ex.regions:
        lines += ["[[regions]]", f"code = {r.code}"]
    return parse_campaign("\n".join(lines) + "\n", "bench.toml")


def placed_events(campaign: Campaign, n: int, prefix: str, agents: int, seed: int) -> list:
    """n new orders spread evenly over the regions; each agent places its orders in
    distinct regions (so the per-region cap of 2 never binds)."""
    codes = [r.code for r in campaign.regions]
    random.Random(seed).shuffle(codes)
    ts = campaign.starts_ms + 1000
    out = []
    for i in range(n):
        agent = i % agents  # its k-th order goes to its k-th region
        region = codes[(agent * 7919 + i // agents) % len(codes)]
        out.append(Placed(order_id=f"{prefix}{i}", merchant_id=f"m{i % 97}",
                          agent_id=f"a{agent}", region=region, paid_cents=5000, ts=ts))
    return out


def rate(engine, events: list, batch: int) -> float:
    start = time.perf_counter()
    for k in range(0, len(events), batch):
        engine.apply(events[k:k + batch])
    return len(events) / (time.perf_counter() - start)


def redis_benchmark(port: int) -> float:
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-P", "64", "-t", "incr", "-q",
                          "-n", "2000000"], capture_output=True, text=True, timeout=300).stdout
    m = re.findall(r"INCR: ([\d.]+) requests per second", out)
    return float(m[-1]) if m else float("nan")


def one_master_cluster() -> RedisServer:
    node = RedisServer(cluster=True).start()
    _cli(node.port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + 20
    while "cluster_state:ok" not in _cli(node.port, "CLUSTER", "INFO"):
        if time.monotonic() > deadline:
            raise RuntimeError("one-node cluster did not come up")
        time.sleep(0.1)
    return node


def open_region_rate(url: str, campaign: Campaign, events: list, batch: int) -> float:
    engine = open_engine(campaign, url)
    engine.reset()
    try:
        r = rate(engine, events, batch)
        counts = engine.export_state()["outcomes"] if len(campaign.regions) else {}
        assert counts.get("awarded") == len(events), counts  # every claim hit an open region
        return r
    finally:
        engine.reset()
        engine.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--skip-cluster", action="store_true")
    args = ap.parse_args()
    n, batch = args.orders, args.batch

    server = RedisServer().start()
    try:
        print(f"redis-server {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}, "  # noqa: E501
              f"{n:,} orders, batch {batch}")
        print(f"redis-benchmark -P 64 -t incr -q: {redis_benchmark(server.port):,.0f} INCR/s")

        for caps in (False, True):
            camp = campaign_like_example(1_000_000, caps)
            # agents: 20 orders each, so the campaign cap is never reached either
            events = placed_events(camp, n, "o", max(200, n // 20), 1)
            r = open_region_rate(server.url, camp, events, batch)
            label = "example caps+budget" if caps else "no caps, no budget"
            print(f"open regions ({label}): {r:,.0f} claims/s")

        # sold out: fill every region (2 slots each), then new orders into sold-out regions
        camp = campaign_like_example(2, True)
        fill = [Placed(order_id=f"f{k}-{r.code}", merchant_id="m", agent_id=f"fill{k}-{r.code}",
                       region=r.code, paid_cents=5000, ts=camp.starts_ms + 1)
                for r in camp.regions for k in range(2)]
        events = placed_events(camp, n, "s", max(200, n // 20), 2)
        mem = open_engine(camp, "memory://")
        mem.apply(fill)
        mem_rate = rate(mem, events, batch)
        red = open_engine(camp, server.url)
        red.reset()
        red.apply(fill)
        red.apply(events[:batch])  # learns which regions are sold out (and who holds them)
        red_rate = rate(red, events[batch:], batch)
        assert red.export_state()["outcomes"] == {**mem.export_state()["outcomes"]}, \
            "sold-out run must count exactly like the memory engine"
        red.reset()
        red.close()
        print(f"sold out: memory {mem_rate:,.0f} claims/s, redis {red_rate:,.0f} claims/s "
              f"= {red_rate / mem_rate:.2f} x memory")
    finally:
        server.close()

    if not args.skip_cluster:
        camp = campaign_like_example(1_000_000, False)
        events = placed_events(camp, n, "o", max(200, n // 20), 1)
        one = one_master_cluster()
        try:
            r1 = open_region_rate(f"redis+cluster://127.0.0.1:{one.port}", camp, events, batch)
            print(f"cluster, 1 master: {r1:,.0f} claims/s")
        finally:
            one.close()
        three = RedisCluster(3).start()
        try:
            r3 = open_region_rate(three.url, camp, events, batch)
            print(f"cluster, 3 masters: {r3:,.0f} claims/s ({r3 / r1:.2f} x 1 master)")
        finally:
            three.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
