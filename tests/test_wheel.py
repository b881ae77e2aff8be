"""A wheel install does what the README shows: built once from this checkout, installed into
a new virtualenv (no system site packages, no checkout on sys.path), then `rewardcore
--version`, a small `rewardcore bench` and a 6-second `rewardcore loadtest` run from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import rewardcore

ROOT = Path(__file__).resolve().parent.parent
# what a source distribution would hold; the rest of a checkout is not the wheel's business
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "out", "*.egg-info",
                                     "__pycache__", "*.so", ".hypothesis", ".pytest_cache",
                                     ".benchmarks", ".ruff_cache", "tests", "bench", "docs")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env=env)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a new virtualenv with rewardcore[serve,load] installed from its wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    try:  # the build requirements are in this environment (scripts/test puts them there)
        import Cython  # noqa: F401
        import setuptools  # noqa: F401
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    _run([*pip, "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp / "dist"), str(src)],
         cwd=tmp)
    (wheel,) = (tmp / "dist").glob("rewardcore-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    constraints = [] if os.environ.get("RC_DEPS") == "latest" else [
        "-c", str(ROOT / "constraints.txt")]
    _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
          "--disable-pip-version-check", *constraints, f"{wheel}[serve,load]"], cwd=tmp)
    return env_dir / "bin"


def _env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_version(installed: Path, tmp_path: Path) -> None:
    out = _run([str(installed / "rewardcore"), "--version"], cwd=tmp_path, env=_env(installed))
    assert out.stdout.strip() == f"rewardcore {rewardcore.__version__}"
    where = _run([str(installed / "python"), "-c", "import rewardcore; print(rewardcore.__file__)"],
                 cwd=tmp_path, env=_env(installed))
    assert where.stdout.startswith(str(installed.parent))  # the wheel's copy, not the checkout


def test_bench_finds_the_example_campaign(installed: Path, tmp_path: Path) -> None:
    out = _run([str(installed / "rewardcore"), "bench", "--orders", "2000", "--memory-orders",
                "10000", "--repeat", "1", "--only", "memory,reference", "--no-fail",
                "--json", str(tmp_path / "bench.json")], cwd=tmp_path, env=_env(installed))
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert rows and not any(r["error"] or r["skipped"] for r in rows), out.stdout
    example = _run([str(installed / "rewardcore"), "example", "d11"], cwd=tmp_path,
                   env=_env(installed))
    assert example.stdout.startswith("# An example")


def test_loadtest_writes_its_report(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    _run([str(installed / "rewardcore"), "loadtest", "--duration", "6", "--peak-users", "4",
          "--out", str(out)], cwd=tmp_path, env=_env(installed), timeout=180)
    report = json.loads((out / "report.json").read_text())
    assert report["daemon"]["exit"] == 0 and report["totals"]["requests"] > 0
    assert (out / "report.md").is_file()
