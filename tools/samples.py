"""Rewrite the sample outputs in README.md and docs/*.md from the current build.

    scripts/samples              rewrite every marked block (the demo's takes a minute or two)
    scripts/samples --check      exit 1, with a diff, when a cheap sample differs from what the
                                 code prints now (timings aside); tests/test_docs.py runs it

A sample is a block between `<!-- sample: NAME -->` and `<!-- /sample -->` in a Markdown file;
NAME is one of SAMPLES below: the command shown and how to run it. Commands run in a fresh
directory holding the example campaigns as `rewardcore example NAME > NAME.toml` writes them,
so what is shown is what a user who installed rewardcore sees.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- sample: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /sample -->)",
                   re.S)
# What changes from run to run: durations and rates.
VOLATILE = [
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<seconds>"),
    (re.compile(r"\b[\d,]+ events/s\b"), "<rate> events/s"),
]


@dataclass(frozen=True)
class Sample:
    shown: str  # the command as the doc shows it
    run: Callable[[Path], str]  # runs it in a work directory, returns what to show
    cheap: bool = True  # checked by --check (and so by the test suite)
    lang: str = "console"


def _rc(*args: str, stream: str = "stdout") -> Callable[[Path], str]:
    def run(work: Path) -> str:
        out = subprocess.run([sys.executable, "-m", "rewardcore", *args], cwd=work,
                             capture_output=True, text=True, timeout=600)
        if out.returncode not in (0, 1):  # lint exits 1 on errors: that is the sample
            raise SystemExit(f"samples: rewardcore {' '.join(args)} exited {out.returncode}:\n"
                             f"{out.stderr}")
        return out.stdout if stream == "stdout" else out.stderr
    return run


def _demo(work: Path) -> str:
    # what scripts/demo runs, at its default size; its summary is replay's stderr
    _rc("generate", "d11-2026.toml", "--orders", "2000000", "--seed", "11",
        "-o", "events.jsonl")(work)
    return _rc("replay", "d11-2026.toml", "events.jsonl", "--state-out", "state.json",
               stream="stderr")(work)


def _simulate(work: Path) -> str:
    out = _rc("simulate", "d11-2026.toml", "--participants", "10000", "--report", "d11.html",
              "--figure", "d11.png")(work)
    _simulate.figure = work / "d11.png"  # type: ignore[attr-defined]
    return out


LIBRARY = [
    "from rewardcore import Completed, Placed, load_campaign, open_engine",
    "from rewardcore.examples import example_path",
    'campaign = load_campaign(example_path("d11-2026"))  # or your file; errors name the field',
    'engine = open_engine(campaign, "memory://")  # or reference://, shm://NAME, redis://HOST:PORT/0',
    "midnight = 1794326400000  # 2026-11-11T00:00+08:00 in epoch milliseconds, the unit of ts",
    'order = Placed(order_id="o1", merchant_id="m1", agent_id="agent-17", region=110140,'
    ' paid_cents=4990, ts=midnight + 5)',
    'd = engine.apply([order, Completed(order_id="o1", ts=midnight + 60_000)])',
    "d[0]  # one row per event: o1, the 1st order into region 110140, won slot 1 and 5 points",
    "d[1]  # the order completed: its 5 points are confirmed, so they can be spent",
    'engine.balance("agent-17")',
    'engine.redeem("r-1", "agent-17", "phone-5")  # phone-5 costs 50 points: 5 are not enough',
    "engine.region_status(110140)  # 19 of its 20 slots can still be won",
    'engine.export_state()["outcomes"]',
]


def _library(work: Path) -> str:
    """The statements run one by one, as in the interactive interpreter."""
    code = (
        "import sys\nns = {}\n"
        "for line in sys.argv[1:]:\n"
        "    print('>>> ' + line)\n"
        "    try:\n"
        "        value = eval(compile(line, '<sample>', 'eval'), ns)\n"
        "    except SyntaxError:\n"
        "        exec(compile(line, '<sample>', 'exec'), ns)\n"
        "        continue\n"
        "    if value is not None:\n"
        "        print(repr(value))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *LIBRARY], cwd=work, capture_output=True,
                         text=True, timeout=120)
    if out.returncode:
        raise SystemExit(f"samples: the library sample failed:\n{out.stderr}")
    return out.stdout


SAMPLES: dict[str, Sample] = {
    "demo": Sample("scripts/demo", _demo, cheap=False, lang=""),
    "example-list": Sample("rewardcore example --list", _rc("example", "--list")),
    "lint-broken": Sample("rewardcore lint broken-2025.toml --participants 60000",
                          _rc("lint", "broken-2025.toml", "--participants", "60000")),
    "lint-d11": Sample("rewardcore lint d11-2026.toml --participants 10000",
                       _rc("lint", "d11-2026.toml", "--participants", "10000")),
    "simulate": Sample("rewardcore simulate d11-2026.toml --participants 10000 "
                       "--report d11.html --figure d11.png", _simulate),
    "library": Sample("", _library, lang="pycon"),
}


def render(name: str, work: Path) -> str:
    s = SAMPLES[name]
    out = s.run(work).rstrip("\n")
    if s.lang == "console":
        out = f"$ {s.shown}\n{out}"
    return f"```{s.lang}\n{out}\n```\n"


def _mask(text: str) -> str:
    for pattern, repl in VOLATILE:
        text = pattern.sub(repl, text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare the cheap samples with the docs instead of rewriting them")
    args = ap.parse_args(argv)
    from rewardcore.examples import example_path, names

    drift: list[str] = []
    used: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in names():
            shutil.copy(example_path(n), work / f"{n}.toml")
        made: dict[str, str] = {}
        for doc in DOCS:
            text = doc.read_text()

            def fill(m: re.Match[str], doc: Path = doc) -> str:
                name = m["name"]
                if name not in SAMPLES:
                    raise SystemExit(f"samples: {doc.name}: unknown sample {name!r}")
                used.add(name)
                if args.check and not SAMPLES[name].cheap:
                    return m[0]
                if name not in made:
                    made[name] = render(name, work)
                if args.check and _mask(made[name]) != _mask(m["body"]):
                    drift.append("".join(difflib.unified_diff(
                        m["body"].splitlines(True), made[name].splitlines(True),
                        f"{doc.name} (sample {name})", "what the code prints now")))
                return m[1] + made[name] + m[4]

            new = BLOCK.sub(fill, text)
            if not args.check and new != text:
                doc.write_text(new)
                print(f"samples: rewrote {doc.relative_to(ROOT)}", file=sys.stderr)
        figure = getattr(_simulate, "figure", None)
        if not args.check and figure is not None and figure.exists():
            shutil.copy(figure, ROOT / "docs" / "img" / "simulate-example.png")
    unused = sorted(set(SAMPLES) - used)
    if unused:
        print(f"samples: no doc shows {', '.join(unused)}", file=sys.stderr)
        return 1
    if drift:
        print("\n".join(drift))
        print("samples: the docs differ from the code; run scripts/samples", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
