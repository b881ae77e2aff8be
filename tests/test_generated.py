"""Files generated from rewardcore.outcomes are current, and the compiled engines carry
the codes the Python enum has (a new outcome is added in outcomes.py alone)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from rewardcore import Outcome, _engine, _shm

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_cython_constants", ROOT / "tools" / "gen_cython_constants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_cython_files_are_current():
    gen = _generator()
    for path, text in gen.render().items():
        assert path.read_text("utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python tools/gen_cython_constants.py")
        assert text.split("\n", 1)[0] in (f"# {gen.GENERATED}", f"/* {gen.GENERATED} */")
    assert gen.main(["--check"]) == 0


def test_both_compiled_engines_carry_every_outcome():
    every = {o.name: int(o) for o in Outcome}
    assert every == _engine.OUTCOME_CODES and every == _shm.OUTCOME_CODES


def test_the_segment_layout_counts_every_outcome():
    # the shared segment's outcome counters are sized in C (ext/shm_sync.h) by the generated
    # ext/rc_outcome_count.h, which the regeneration check above covers
    assert (ROOT / "ext" / "rc_outcome_count.h") in _generator().render()
    sync = (ROOT / "ext" / "shm_sync.h").read_text()
    assert '#include "rc_outcome_count.h"' in sync
    assert "#define RC_SHM_N_OUTCOMES RC_N_OUTCOMES\n" in sync
    count = (ROOT / "ext" / "rc_outcome_count.h").read_text()
    found = re.search(r"#define RC_N_OUTCOMES (\d+)", count)
    assert found is not None and int(found.group(1)) == len(Outcome)
