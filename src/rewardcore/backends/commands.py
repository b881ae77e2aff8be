"""Backend maintenance commands: `shm-ls` and `shm-rm`."""

from __future__ import annotations

import argparse


def cmd_shm_ls(args: argparse.Namespace) -> int:
    from .shm import list_segments, segment_info

    for name in list_segments():
        try:
            info = segment_info(name)
        except OSError as exc:
            print(f"{name}\tunreadable: {exc.strerror}")
            continue
        if info is None:
            print(f"{name}\tnot a rewardcore segment")
            continue
        state = ("suspect (a process died mid-batch)" if info["poisoned"]
                 else "in use" if info["live_pids"]
                 else "stale (its processes died)" if info["pids"]
                 else "idle")
        print(f"{name}\t{info['size']:,} bytes\t{info['orders']:,} orders\t"
              f"{info['claims']:,} claims\t{state}\tpids {info['live_pids'] or '-'}")
    return 0


def cmd_shm_rm(args: argparse.Namespace) -> int:
    import sys

    from .shm import remove_segment

    for name in args.names:
        remove_segment(name, force=args.force)
        print(f"removed shared-memory segment {name}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `shm-ls` and `shm-rm` to the rewardcore command."""
    p = sub.add_parser("shm-ls", help="list the shared-memory segments of shm:// backends")
    p.set_defaults(func=cmd_shm_ls)
    p = sub.add_parser("shm-rm", help="remove shared-memory segments (a stale one after a crash)")
    p.add_argument("names", nargs="+", metavar="NAME", help="segment name, as in shm://NAME")
    p.add_argument("--force", action="store_true",
                   help="remove even while processes are attached (they keep their mapping)")
    p.set_defaults(func=cmd_shm_rm)
