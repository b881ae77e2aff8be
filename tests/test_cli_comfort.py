"""The command for a person at a terminal: help with defaults, progress only on a terminal,
a quiet end when the reader of stdout goes away, warnings for inputs and backends that hold
nothing."""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from rewardcore.cli import build_parser
from rewardcore.console import BROKEN_PIPE_EXIT

from .conftest import EXAMPLES, rc

CAMPAIGN = str(EXAMPLES / "d11-2026.toml")


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_argument_of_every_command_says_what_it_is():
    missing = [f"{' '.join(path)} {action.option_strings or action.dest}"
               for path, action in _options(build_parser()) if not action.help]
    assert missing == []


def test_help_shows_the_defaults(cli):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    loadtest = sub.choices["loadtest"].format_help()
    assert "(default: 300" in loadtest and "(default: 40)" in loadtest
    bench = sub.choices["bench"].format_help()
    assert "(default: 3)" in bench
    simulate = " ".join(sub.choices["simulate"].format_help().split())
    assert "(default: 200,000)" in simulate and "random seed" in simulate
    assert "campaign TOML file" in simulate


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    state = f"memory://{tmp_path}/state?fsync=none"
    events = tmp_path / "events.jsonl"
    assert rc("generate", CAMPAIGN, "--orders", "30000", "-o", str(events)).returncode == 0
    assert rc("replay", CAMPAIGN, str(events), "--backend", state).returncode == 0
    for args in (["winners", CAMPAIGN, "--backend", state],
                 ["generate", CAMPAIGN, "--orders", "200000"]):
        proc = subprocess.Popen([sys.executable, "-m", "rewardcore", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stderr:
            first = proc.stdout.readline()
            proc.stdout.close()  # what `| head -1` does
            err = proc.stderr.read().decode()
        assert proc.wait(120) == BROKEN_PIPE_EXIT, err
        assert first and err == "", err


def test_an_input_without_a_valid_line_is_an_error(tmp_path, cli):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{\"type\": \"placed\"}\n")
    out = cli("replay", CAMPAIGN, str(garbage), "--dead-letters", str(tmp_path / "dead.jsonl"))
    assert out.returncode == 1
    assert "no valid event, 2 line(s) rejected" in out.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = cli("replay", CAMPAIGN, str(empty))
    assert out.returncode == 1 and "no event in the input" in out.stderr


def test_a_json_array_gets_a_hint(tmp_path, cli):
    array = tmp_path / "events.json"
    array.write_text('[{"type": "completed", "order_id": "o1", "ts": 1},\n'
                     ' {"type": "completed", "order_id": "o2", "ts": 2}]\n')
    out = cli("replay", CAMPAIGN, str(array), "--dead-letters", str(tmp_path / "dead.jsonl"))
    assert out.returncode == 1
    assert "looks like a JSON array; replay reads JSON lines" in out.stderr
    assert "jq -c '.[]'" in out.stderr


def test_an_empty_backend_is_reported_and_nothing_is_done(tmp_path, cli):
    state = tmp_path / "state.json"
    out = cli("export", CAMPAIGN, "--backend", "memory://", "--state-out", str(state))
    assert out.returncode == 1 and "holds no events for campaign d11-2026" in out.stderr
    assert not state.exists()
    out = cli("winners", CAMPAIGN, "--backend", "memory://")
    assert out.returncode == 1 and "no winners to list" in out.stderr and out.stdout == ""


def test_progress_is_drawn_on_a_terminal_only(tmp_path, cli):
    out = cli("generate", CAMPAIGN, "--orders", "2000", "-o", str(tmp_path / "a.jsonl"))
    assert out.returncode == 0 and out.stderr == ""  # stderr is not a terminal here
    master, slave = pty.openpty()
    # a terminal 100 columns wide (a new pty has none)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    try:
        for extra, drawn in (([], True), (["--quiet"], False)):
            proc = subprocess.run(
                [sys.executable, "-m", "rewardcore", "generate", CAMPAIGN, "--orders", "60000",
                 "-o", str(tmp_path / "b.jsonl"), *extra],
                stderr=slave, stdout=subprocess.DEVNULL, timeout=120)
            assert proc.returncode == 0
            seen = b""
            os.set_blocking(master, False)
            try:
                while chunk := os.read(master, 65536):
                    seen += chunk
            except BlockingIOError:
                pass
            assert (b"generate" in seen) is drawn, seen
    finally:
        os.close(master)
        os.close(slave)
