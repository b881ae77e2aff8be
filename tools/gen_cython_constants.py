"""Write the Cython and C files that carry rewardcore.outcomes into the compiled engines.

    python tools/gen_cython_constants.py          # rewrite them
    python tools/gen_cython_constants.py --check  # exit 1 when one is not current

ext/rc_outcomes.pxi      the codes as a C enum (included by ext/rc_common.pxd)
ext/rc_outcome_codes.pxi OUTCOME_CODES, name -> code, in both compiled modules (included by
                         ext/engine.pyx and ext/shm.pyx; tests compare it with the enum)
ext/rc_outcome_count.h   RC_N_OUTCOMES, the number of codes, in C (included by
                         ext/shm_sync.h: the segment header's outcome counters)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("GENERATED FROM src/rewardcore/outcomes.py BY tools/gen_cython_constants.py, "
             "DO NOT MODIFY.")
HEADER = f"# {GENERATED}\n"


def render() -> dict[Path, str]:
    sys.path.insert(0, str(ROOT / "src"))
    from rewardcore.outcomes import Outcome

    enum = [HEADER, "# Outcome codes in C (append, never renumber).\n", "cdef enum:\n"]
    enum += [f"    {o.name} = {int(o)}\n" for o in Outcome]
    enum.append(f"    N_OUTCOMES = {len(Outcome)}\n")
    codes = [HEADER, "OUTCOME_CODES = {\n"]
    codes += [f'    "{o.name}": {o.name},\n' for o in Outcome]
    codes.append("}\n")
    count = (f"/* {GENERATED} */\n"
             "/* The number of outcome codes, for C (the shared segment's outcome counters). */\n"
             "#ifndef RC_OUTCOME_COUNT_H\n#define RC_OUTCOME_COUNT_H\n\n"
             f"#define RC_N_OUTCOMES {len(Outcome)}\n\n#endif\n")
    return {ROOT / "ext" / "rc_outcomes.pxi": "".join(enum),
            ROOT / "ext" / "rc_outcome_codes.pxi": "".join(codes),
            ROOT / "ext" / "rc_outcome_count.h": count}


def main(argv: list[str]) -> int:
    stale = []
    for path, text in render().items():
        current = path.read_text("utf-8") if path.exists() else ""
        if current == text:
            continue
        if "--check" in argv:
            stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text, "utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"not current: {', '.join(stale)}; run python tools/gen_cython_constants.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
