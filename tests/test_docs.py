"""The docs a user reads: every relative link resolves inside the repository, no page speaks of
how rewardcore was made instead of what it does, and the sample outputs shown are what the
code prints now (scripts/samples rewrites them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Words about the project's own process that mean nothing to a user.
INTERNAL = re.compile(
    r"\bissue\s*#?\d+|\bthe issue\b|\bhelpers?\b(?! (?:function|module|class|script))"
    r"|\bsessions?\b|/tmp/\S*notes|\.\./shared/|(?-i:\bDESIGN\.md\b)", re.I)


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    out = set()
    for line in doc.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.is_relative_to(ROOT) or not dest.exists():
            bad.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: {dest.name} has no heading #{anchor}")
    assert not bad, f"{doc.name}: " + "; ".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_speak_of_rewardcore_only(doc: Path) -> None:
    found = [f"line {n}: {m.group(0)!r}" for n, line in enumerate(doc.read_text().splitlines(), 1)
             for m in INTERNAL.finditer(line)]
    assert not found, f"{doc.name}: " + "; ".join(found)


def test_cheap_samples_match_what_the_code_prints() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "samples.py"), "--check"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
