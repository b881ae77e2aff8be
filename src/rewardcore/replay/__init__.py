"""One replay pipeline for every backend, one worker or many:

    source (file, stdin; blocks of whole lines; routing)  rewardcore.replay.source
    -> the run loop (decode, apply, count, dead letters)   rewardcore.replay.run
    -> worker processes sharing the backend                rewardcore.replay.workers
    -> resuming after a crash (resumable engines)          rewardcore.replay.resume

`replay` is the `rewardcore replay` command; `replay_file` is the same for a file and an
engine the caller holds (the benchmark).
"""

from __future__ import annotations

from .pipeline import replay, replay_file
from .run import ReplayReport

__all__ = ["ReplayReport", "replay", "replay_file"]
