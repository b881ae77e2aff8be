"""Configuration by environment: every `serve` flag has a REWARDCORE_* variable, flags win,
a bad value is refused naming the variable, and a daemon started from variables alone
behaves like one started with the same flags."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rewardcore.daemon.cli import config_from_args, serve_parser
from rewardcore.daemon.config import env_name, env_table
from rewardcore.errors import ConfigError

from .conftest import Ran
from .test_daemon import TOKEN, Daemon, campaign_file, daemons
from .test_daemon_streams import placed_line

__all__ = ["daemons"]  # a fixture

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def as_env(argv: list[str]) -> dict[str, str]:
    """The REWARDCORE_* variables that say what these `serve` flags say."""
    by_flag = {o: a for a in serve_parser()._actions for o in a.option_strings}
    env: dict[str, str] = {}
    at = 0
    while at < len(argv):
        action = by_flag[argv[at]]
        name = env_name(action)
        assert name is not None
        if action.nargs == 0:
            env[name], at = "1", at + 1
        else:
            env[name], at = argv[at + 1], at + 2
    return env


def parse(argv: list[str], environ: dict[str, str]) -> argparse.Namespace:
    return serve_parser(environ).parse_args(argv)


def test_every_flag_has_a_variable_and_the_docs_table_is_current() -> None:
    parser = serve_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    names = [env_name(a) for a in flags]
    assert None not in names and len(set(names)) == len(names)
    assert "REWARDCORE_TOKEN" in names and "REWARDCORE_MAX_BATCH" in names
    table = env_table(parser)
    assert table in DOCS.read_text(), ("docs/operations.md: the table of variables is out of "
                                       "date; regenerate it with "
                                       "`python -m rewardcore.daemon.config`")


def test_flags_win_and_variables_are_parsed_as_their_flags(tmp_path: Path) -> None:
    camp = str(campaign_file(tmp_path / "c.toml", regions=2))
    base = {"REWARDCORE_CAMPAIGN": camp, "REWARDCORE_TOKEN": TOKEN}
    # from the environment alone, typed as the flag's type
    cfg = config_from_args(parse([], {**base, "REWARDCORE_MAX_BATCH": "64",
                                      "REWARDCORE_GRACE": "2.5", "REWARDCORE_ACCESS_LOG": "yes",
                                      "REWARDCORE_ENGINE_THREAD": "on",
                                      "REWARDCORE_HTTP": "0.0.0.0:9000"}))
    assert (cfg.campaign, cfg.max_batch, cfg.grace, cfg.access_log, cfg.engine_thread,
            cfg.host, cfg.port) == (camp, 64, 2.5, True, "on", "0.0.0.0", 9000)
    # a flag wins, even over a variable that would not parse
    cfg = config_from_args(parse(["--max-batch", "4", "--grace", "1"],
                                 {**base, "REWARDCORE_MAX_BATCH": "lots",
                                  "REWARDCORE_GRACE": "9"}))
    assert (cfg.max_batch, cfg.grace) == (4, 1.0)
    assert config_from_args(parse([], {**base, "REWARDCORE_ACCESS_LOG": "0"})).access_log is False
    for name, value, says in [
        ("REWARDCORE_MAX_BATCH", "lots", "invalid literal for int()"),
        ("REWARDCORE_ENGINE_THREAD", "sideways", "expected one of auto, on, off"),
        ("REWARDCORE_ACCESS_LOG", "maybe", "expected 1/true/yes/on or 0/false/no/off"),
    ]:
        with pytest.raises(ConfigError) as err:
            config_from_args(parse([], {**base, name: value}))
        assert f"{name}={value!r}" in str(err.value) and says in str(err.value)
    # the required campaign is required only when neither says it
    with pytest.raises(SystemExit):
        parse([], {"REWARDCORE_TOKEN": TOKEN})


def test_a_bad_variable_stops_the_start_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   cli: Callable[..., Ran]) -> None:
    monkeypatch.setenv("REWARDCORE_CAMPAIGN", str(campaign_file(tmp_path / "c.toml")))
    monkeypatch.setenv("REWARDCORE_TOKEN", TOKEN)
    monkeypatch.setenv("REWARDCORE_LOG_EVERY", "often")
    ran = cli("serve")
    assert ran.returncode == 2
    line = json.loads(ran.stderr.strip().splitlines()[-1])
    assert line["event"] == "error" and "REWARDCORE_LOG_EVERY='often'" in line["error"]
    assert "--log-every" in line["error"]


def _wait_for(d: Daemon, event: str, n: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """The log lines of this event (with these fields), once there are n of them."""
    deadline = time.monotonic() + 60  # a hang guard, not a timing
    while time.monotonic() < deadline:
        found = [r for r in d.logs() if r.get("event") == event
                 and all(r.get(k) == v for k, v in fields.items())]
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} line:\n{d.log_text()}")


def _wait_stats(d: Daemon, events_total: int) -> list[dict[str, Any]]:
    """The stats lines up to the first that has counted `events_total` events."""
    deadline = time.monotonic() + 60  # a hang guard, not a timing
    while time.monotonic() < deadline:
        lines = [r for r in d.logs() if r.get("event") == "stats"]
        for n, line in enumerate(lines):
            if line["events_total"] >= events_total:
                return lines[:n + 1]
        time.sleep(0.05)
    raise AssertionError(f"no stats line with {events_total} events:\n{d.log_text()}")


def test_a_daemon_from_variables_alone_behaves_like_the_same_flags(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=2, budget_points=40)
    started = []
    for how in ("flags", "env"):
        work = tmp_path / how
        work.mkdir()
        argv = ["--campaign", str(camp), "--backend", "memory://", "--http", "127.0.0.1:0",
                "--dead-letters", str(work / "dead.jsonl"),
                "--state-out", str(work / "state.json"), "--max-batch", "3",
                "--grace", "5", "--log-every", "0.2", "--access-log", "--max-body", "64KiB",
                "--engine-thread", "on"]
        d = Daemon(work, camp)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("REWARDCORE_")}
        if how == "flags":
            d.cmd = [sys.executable, "-m", "rewardcore", "serve", *argv]
            d.env = {**clean, "REWARDCORE_TOKEN": TOKEN}
        else:  # not one flag
            d.cmd = [sys.executable, "-m", "rewardcore", "serve"]
            d.env = {**clean, **as_env(argv), "REWARDCORE_TOKEN": TOKEN}
        daemons.append(d)
        started.append(d.start())
    body = b"".join(placed_line(f"o{k}", 1 + k % 3, f"a{k % 2}") + b"\n" for k in range(8))
    body += b'{"type": "placed", "order_id": 7}\n'
    answers, views = [], []
    for d in started:
        answers.append(d.post("/v1/events", body, "application/x-ndjson"))
        views.append([d.request("GET", path)[2] for path in ("/v1/state", "/v1/regions/1")])
    assert answers[0] == answers[1] and answers[0][0] == 200
    assert views[0] == views[1]
    skip = {"ts", "pid", "port", "http", "startup_s"}
    starts = [{k: v for k, v in _wait_for(d, "start")[0].items() if k not in skip}
              for d in started]
    assert starts[0] == starts[1]
    assert starts[0]["max_batch"] == 3 and starts[0]["engine_thread"] is True
    assert starts[0]["log_every_s"] == 0.2 and starts[0]["max_body"] == 64 * 1024
    for d in started:
        stats = _wait_stats(d, events_total=8)
        # the lines count the intervals: together they hold every event, each outcome
        assert sum(s["events"] for s in stats) == 8
        outcomes: dict[str, int] = {}
        for line in stats:
            for label, n in line["outcomes"].items():
                outcomes[label] = outcomes.get(label, 0) + n
        assert outcomes == answers[0][1]["counts"]
        assert all(s["events_per_s"] >= 0 and s["interval_s"] > 0 for s in stats)
        access = _wait_for(d, "access", path="/v1/events")
        assert access[0]["method"] == "POST" and access[0]["status"] == 200
        assert d.stop(signal.SIGTERM) == 0
    outs = [(d.workdir / "state.json").read_bytes() for d in started]
    assert outs[0] == outs[1] == views[0][0]
    dead = [(d.workdir / "dead.jsonl").read_text().splitlines() for d in started]
    assert len(dead[0]) == len(dead[1]) == 1
