"""Operating the daemon: the engine summary behind the campaign gauges, the deploy/ files
checked by promtool, and every metric the rules and the dashboard name exported by a started
daemon."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from rewardcore import Campaign, Engine
from rewardcore.codec import decode_jsonl
from rewardcore.daemon.cli import serve_parser
from rewardcore.daemon.config import env_name
from rewardcore.daemon.metrics import reason_class
from rewardcore.engine import Summary
from rewardcore.traffic import TrafficShape, generate

from .campaigns import make_campaign
from .test_daemon import Daemon, campaign_file, daemons, start
from .test_daemon_streams import placed_line

__all__ = ["daemons"]  # a fixture


def _campaign(**settings: object) -> Campaign:
    regions: list[tuple[int, int, tuple[tuple[int, int], ...]]] = [
        (code, 3, ((1, 5), (3, 10))) for code in range(1, 31)]
    regions.append((99, 10_000, ((10_000, 1),)))  # never sells out
    return make_campaign(regions, (("mug", 10, 40), ("tv", 200, 2)), **settings)


@pytest.mark.parametrize("settings", [
    {"on_close": "release", "budget_points": 400},
    {"on_close": "forfeit", "settle_on": "placed"},
], ids=["release-budget", "forfeit-placed"])
def test_summary_equals_the_one_read_from_every_claim(
        make_engine: Callable[[Campaign], Engine], settings: dict[str, object]) -> None:
    """Each engine's cheap summary says what the default (which reads every claim and
    balance) says, on every field the engine reports."""
    campaign = _campaign(**settings)
    events, dead = decode_jsonl(b"".join(generate(campaign, TrafficShape(
        orders=3000, seed=3, participants=60, redeem_share=0.5, close_rate=0.1))))
    assert not dead
    engine = make_engine(campaign)
    for at in range(0, len(events), 500):
        engine.apply(events[at:at + 500])
    got = engine.summary()
    want = Engine.summary(engine)
    assert got.slots_left == want.slots_left
    assert got.stock == want.stock
    for name in ("budget_used", "claims", "points", "beneficiaries"):
        if getattr(got, name) is not None:  # None: not cheap on this engine
            assert getattr(got, name) == getattr(want, name), name
    # the scenario is not trivial: some regions sold out, some claims revoked, points spent
    assert 0 in want.slots_left and any(want.slots_left)
    assert want.claims and want.claims["revoked"] > 0
    assert want.points and want.points["redeemed"] > 0
    assert isinstance(got, Summary)


# -- deploy/: checked by the real tools -----------------------------------------------------
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rewardcore-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "rewardcore-dashboard.json"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: apt-get install prometheus (scripts/test installs it)"
    return subprocess.run([exe, *args], input=stdin, capture_output=True, cwd=PROMETHEUS,
                          timeout=120)


def test_promtool_checks_the_config_the_rules_and_their_unit_tests() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", RULES.name),
                 ("test", "rules", "rewardcore-rules.test.yml")):
        ran = promtool(*args)
        assert ran.returncode == 0, (args, ran.stdout.decode(), ran.stderr.decode())
    # every alert has a unit test of its own
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "rewardcore-rules.test.yml").read_text())["tests"]
    tested = {t["alertname"] for test in tests for t in test.get("alert_rule_test", [])
              if t["exp_alerts"]}
    assert alerts == tested, alerts ^ tested
    assert len(alerts) == 7


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (no systemd on this machine)")
    unit = (DEPLOY / "systemd" / "rewardcore.service").read_text()
    # verify checks that ExecStart exists: point it at this environment's command
    rewardcore = shutil.which("rewardcore") or str(Path(sys.executable).parent / "rewardcore")
    path = tmp_path / "rewardcore.service"
    path.write_text(unit.replace("/opt/rewardcore/bin/rewardcore", rewardcore))
    ran = subprocess.run([exe, "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0 and not ran.stderr.strip(), ran.stderr
    env = (DEPLOY / "systemd" / "rewardcore.env").read_text()
    names = {line.split("=", 1)[0] for line in env.splitlines()
             if line and not line.startswith("#")}
    assert names <= {env_name(a) for a in serve_parser()._actions} - {None}


_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label
    matchers, ranges, grouping clauses and function calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return {n for n in names if n.lower() not in _NOT_METRICS}


def test_metric_names_are_found_in_expressions() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (job, le) (rate('
                        'rewardcore_http_request_seconds_bucket{job="$job"}[$__rate_interval]'
                        '))) > 0.025 and on (instance) up == 0') == {
        "rewardcore_http_request_seconds_bucket", "up"}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    exprs = []
    for p in dash["panels"]:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p[
            "gridPos"]["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["refId"] and t["expr"], p["title"]
            exprs.append(t["expr"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":  # label_values(SELECTOR, label)
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"])
            assert m, var["query"]
            exprs.append(m.group(1))
    return exprs


def test_a_started_daemon_exports_every_metric_the_rules_and_the_dashboard_name(
        tmp_path: Path, daemons: list[Daemon], redis_url: str) -> None:
    """Scrape a started daemon (with a stream source, a budget, a bad event and a region
    left open) and compare: every name the alert rules and the dashboard read is there, and
    promtool's linter finds nothing wrong with the exposition."""
    camp = campaign_file(tmp_path / "c.toml", regions=4, slots=2, budget_points=1000)
    hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    url = f"redis-stream://{hostport}/orders?group=rc&consumer=ops&block=500&db=2"
    d = start(daemons, tmp_path, camp, "--source", url)
    # the start line names the whole source, every parameter kept
    assert [r["source"] for r in d.logs() if r["event"] == "start"] == [url]
    body = b"".join(placed_line(f"o{k}", 1 + k % 3, f"a{k}") + b"\n" for k in range(7))
    status, answer = d.post("/v1/events", body + b'{"type": "placed"}\n',
                            "application/x-ndjson")
    assert status == 200 and answer["rejected"] == 1
    deadline = time.monotonic() + 60  # a hang guard: the consumer's first XINFO sets lag
    while True:
        _, _, data = d.request("GET", "/metrics", token=None)
        text = data.decode()
        exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        if "rewardcore_stream_lag" in exported or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    exported.add("up")  # Prometheus's own, per target
    rules = yaml.safe_load(RULES.read_text())
    named = {n for g in rules["groups"] for r in g["rules"] for n in metric_names(r["expr"])}
    named |= {n for e in _dashboard_exprs() for n in metric_names(e)}
    assert named, "no metric names found"
    assert named <= exported, sorted(named - exported)
    lint = promtool("check", "metrics", stdin=data)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    # the campaign gauges say what the engine holds
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("rewardcore_campaign_regions", (("state", "sold_out"),))] == 3
    assert samples[("rewardcore_campaign_region_slots_left", (("region", "4"),))] == 2
    assert samples[("rewardcore_campaign_claims", (("state", "pending"),))] == 6
    assert samples[("rewardcore_campaign_budget_used_points", ())] == 3 * (5 + 10)
    assert samples[("rewardcore_dead_letters_total", (("reason", "invalid"),
                                                      ("source", "http")))] == 1
    assert samples[("rewardcore_batch_seconds_count", (("engine", "memory"),))] >= 1
    assert ("process_resident_memory_bytes", ()) in samples


@pytest.mark.parametrize(("body", "cls"), [
    (b"x", "malformed"),
    (b"\xff\xfe", "malformed"),
    (b'{"type": "placed"}', "invalid"),
    (b'{"type": "nope", "order_id": "a"}', "invalid"),
    (b'{"type": "placed", "order_id": "o", "merchant_id": "m", "agent_id": "a", '
     b'"region": "1", "paid_cents": 1, "ts": 1}', "invalid"),
])
def test_dead_letters_are_classed_by_their_reason(body: bytes, cls: str) -> None:
    """The reason label of rewardcore_dead_letters_total, from the codec's real reasons."""
    _, dead = decode_jsonl(body)
    assert [reason_class(d.reason) for d in dead] == [cls]
    # the stream consumer's own reasons
    assert reason_class("delivered 6 times (max_deliveries 5)") == "poison"
    assert reason_class("the entry has no field 'e' (fields: x)") == "missing"
    assert reason_class(f"field 'e': {dead[0].reason}") == cls


def test_a_source_url_is_logged_whole_with_its_password_hidden() -> None:
    from rewardcore.daemon.config import parse_stream_url

    src = parse_stream_url("redis-stream://app:s3cret@10.0.0.5:6380/orders?group=g&db=2"
                           "&batch=64")
    assert src.redacted() == ("redis-stream://***@10.0.0.5:6380/orders?group=g&db=2"
                              "&batch=64")
    assert (src.db, src.batch, src.password) == (2, 64, "s3cret")


def test_stragglers_are_listed_once_the_alert_can_look_at_them() -> None:
    """The alert watches regions once 90% are sold out: by then each open one has a series
    (and before, none does)."""
    from rewardcore.daemon.metrics import Metrics

    regions = [(code, 1, ((1, 5),)) for code in range(1, 1112)]  # 1,111 like the example
    campaign = make_campaign(regions)
    metrics = Metrics(campaign, "memory://")

    def listed(n_open: int) -> int:
        left = tuple([1] * n_open + [0] * (1111 - n_open))
        metrics.summary = Summary(left, {"mug": 5}, 0)
        text = metrics.render().decode()
        return sum(1 for line in text.splitlines()
                   if line.startswith("rewardcore_campaign_region_slots_left{"))

    assert listed(111) == 111  # 90% sold out: every open region listed
    assert listed(112) == 0
