"""Write src/rewardcore/lua/_constants.lua from rewardcore.outcomes and the wire tags.

    python tools/gen_lua_constants.py          # rewrite the file
    python tools/gen_lua_constants.py --check  # exit 1 when the file is not current
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src" / "rewardcore" / "lua" / "_constants.lua"


def render() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from rewardcore._redis_wire import WIRE
    from rewardcore.outcomes import Outcome

    lines = ["-- GENERATED FROM src/rewardcore/outcomes.py and "
             "src/rewardcore/_redis_wire.py, DO NOT EDIT.",
             "-- Regenerate with: python tools/gen_lua_constants.py", ""]
    lines += [f"local {o.name} = {int(o)}" for o in Outcome]
    lines.append("")
    for name, value in WIRE.items():
        text = repr(value) if isinstance(value, str) else str(value)
        lines.append(f"local {name} = {text}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text("utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is not current: run python tools/gen_lua_constants.py")
            return 1
        return 0
    TARGET.write_text(text, "utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
