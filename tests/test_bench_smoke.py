"""Smoke runs of the throughput harness (`rewardcore bench`) as a subprocess, at tiny sizes.

These check that every row group runs and reports numbers; they never assert on speed (the
machine is shared, and budgets may be MISSED on it: --no-fail keeps the exit code 0 then,
and the JSON still says MISSED). Speed itself is measured by bench/, on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rewardcore.backends import backend_schemes

from .campaigns import campaign_toml

ROOT = Path(__file__).resolve().parent.parent


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rewardcore", "bench", *args, "--repeat", "1", "--no-fail",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def _measured(row: dict) -> None:
    assert not row["skipped"], row
    assert row["events"] > 0 and row["seconds"] > 0 and row["rate"] > 0, row
    assert len(row["runs"]) >= 1 or row["name"].startswith("order-id table"), row
    if row["goal"] is not None:
        assert row["ratio"] is not None and row["ratio"] > 0, row
        assert row["verdict"] in ("ok", "MISSED"), row


def test_memory_and_reference_rows(tmp_path: Path) -> None:
    report, table = _bench(tmp_path, "--orders", "2000", "--memory-orders", "10000",
                           "--only", "memory,reference")
    rows = {r["name"]: r for r in report["rows"]}
    for name in ("msgspec decode alone (JSON lines)", "reference engine: claim step",
                 "memory engine: decode + claims", "memory engine: claim step (pre-decoded)",
                 "memory engine: claim step, batch 64", "memory engine: claim step, batch 16384",
                 "order-id table at 10,000 orders"):
        assert name in rows, sorted(rows)
        _measured(rows[name])
        assert name in table  # the printed table has every row too
    assert rows["memory engine: decode + claims"]["goal"] == 0.85
    assert rows["memory engine: claim step (pre-decoded)"]["goal"] == 20
    assert report["meta"]["groups"] == ["decode", "reference", "memory"]
    # the events are generated once: every row over the full stream saw the same count
    full = {rows[n]["events"] for n in ("msgspec decode alone (JSON lines)",
                                       "reference engine: claim step",
                                       "memory engine: decode + claims")}
    assert len(full) == 1


def test_redis_cluster_and_other_backends_rows(tmp_path: Path) -> None:
    """Redis standalone and a 3-master cluster (servers the harness starts and stops), on a
    small campaign so the sold-out fill is quick; shm and durable rows where installed."""
    campaign = tmp_path / "small.toml"
    campaign.write_text(campaign_toml(
        [(100 + k, 5, ((2, 5), (5, 10))) for k in range(30)], [("mug", 10, 5)],
        beneficiary="agent", on_close="release", budget_points=400,
        max_claims_per_beneficiary=20, max_claims_per_beneficiary_per_region=2))
    report, _ = _bench(tmp_path, "--campaign", str(campaign), "--orders", "3000",
                       "--redis-orders", "400", "--redis-benchmark-requests", "20000",
                       "--memory-orders", "0", "--batch", "256", "--shm-workers", "1,2",
                       "--only", "redis,cluster,shm,durable")
    rows = {r["name"]: r for r in report["rows"]}
    for label in ("redis engine, 1 redis-server", "redis engine, 3-master cluster"):
        open_row = rows[f"{label}: claims, open regions, no caps"]
        capped = rows[f"{label}: claims, example caps and budget"]
        sold = rows[f"{label}: orders into sold-out regions"]
        replay = rows[f"{label}: replay of generated traffic"]
        for r in (open_row, capped, sold, replay):
            _measured(r)
            assert "script calls/batch" in r["note"] and "us server CPU/event" in r["note"], r
        assert open_row["events"] == sold["events"] == capped["events"] == 400
        assert open_row["note"].startswith("awarded 100%"), open_row
        assert "sold_out" in sold["note"], sold
        assert [r["goal"] for r in (open_row, capped, sold, replay)] == [0.10, 0.05, 0.20, 0.12]
    assert "per master" in rows["redis engine, 3-master cluster: replay of generated traffic"][
        "note"]
    for name in ("redis-benchmark -P 64 -t incr, 1 redis-server",
                 "redis-benchmark -P 64 -t incr, 3-master cluster"):
        _measured(rows[name])
    # a backend is skipped only when it is really missing, and the row says so
    shm_ready = "shm" in backend_schemes()
    for r in report["rows"]:
        if r["skipped"]:
            assert r["group"] in ("shm", "durable"), r
            assert r["group"] != "shm" or not shm_ready, r
        else:
            _measured(r)
    durable = [r["name"] for r in report["rows"] if r["group"] == "durable"]
    assert durable == ["durable memory:///dir"] or durable == [
        "memory engine: decode + claims", "durable memory:///dir, fsync per batch",
        "durable memory:///dir, no fsync"], durable
    shm = [r for r in report["rows"] if r["group"] == "shm"]
    assert shm
    if shm_ready:
        assert [r["name"] for r in shm] == ["shm engine, 1 worker", "shm engine, 2 workers",
                                            "2 processes, nothing shared (memory://)"]
        for r in shm:
            _measured(r)


def test_a_failing_row_is_reported_and_the_others_go_on(capsys) -> None:
    """One backend falling over mid-run gives an ERROR row with its reason; the rows
    measured with it keep their numbers, and `rewardcore bench` would exit 2."""
    import argparse

    from rewardcore.capacity.bench import Measure, bench_context, group_decode, print_table
    from rewardcore.capacity.commands import add_bench_arguments

    ap = argparse.ArgumentParser()
    add_bench_arguments(ap)
    args = ap.parse_args(["--orders", "300", "--repeat", "2", "--only", "decode"])
    calls = []

    def boom() -> int:
        calls.append(1)
        raise RuntimeError("the backend fell over")

    with bench_context(args) as b:
        group_decode(b)
        b.add(Measure("broken row", "test", boom))
        b.measure_all()
        rows = b.results()
    decode, broken = rows
    assert decode.rate > 0 and len(decode.runs) == 2 and not decode.error
    assert broken.verdict == "ERROR" and "the backend fell over" in broken.error
    assert calls == [1]  # not tried again in the second round
    print_table(rows)
    assert "ERROR" in capsys.readouterr().out
