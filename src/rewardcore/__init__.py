"""rewardcore: order ingestion and "first N orders earn points" claims at peak-day load."""

from __future__ import annotations

from .backends import open_engine, register_backend
from .campaign import Campaign, load_campaign, parse_campaign
from .codec import DeadLetter, decode_json_array, decode_jsonl, decode_msgpack, read_jsonl
from .engine import Balance, Claim, Decision, Decisions, Engine, RegionStatus, Resumable, dump_state
from .errors import BackendError, ConfigError, EventError, RewardcoreError
from .events import Closed, Completed, Event, Placed, Redeem
from .outcomes import Outcome

__version__ = "0.2.0"

__all__ = [
    "Balance",
    "BackendError",
    "Campaign",
    "Claim",
    "Closed",
    "Completed",
    "ConfigError",
    "DeadLetter",
    "Decision",
    "Decisions",
    "Engine",
    "Event",
    "EventError",
    "Outcome",
    "Placed",
    "Redeem",
    "RegionStatus",
    "Resumable",
    "RewardcoreError",
    "decode_json_array",
    "decode_jsonl",
    "decode_msgpack",
    "dump_state",
    "load_campaign",
    "open_engine",
    "parse_campaign",
    "read_jsonl",
    "register_backend",
]
