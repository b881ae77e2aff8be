"""`redis://host:port/db` and `redis+cluster://host:port`: claims decided by Lua scripts in
Redis (or Valkey) >= 7, so every gateway host shares one "first N orders" per region.

Layout and protocol are in docs/redis.md. In short, a batch is two steps:
  1. mark_orders, one call per order bucket (pipelined per node; on a standalone server
     one call for every bucket the batch touches): dedup, tombstones, early
     completions, the outcomes that need no decision state; each candidate is recorded as
     "sent to core call X";
  2. decide_batch, one call on the sequencer tag {C:core}: the batch's remaining items in
     order (caps, rank, slot, budget, award; revoke; confirm; redeem), idempotent by call id.

URL options (query string): prefix=rc (key prefix), buckets=64 (order buckets),
call_events=2048 (events per two-step call; larger batches are split), wait=0 (replicas
that must confirm each step's writes), wait_timeout=1000 (ms), plus the redis-py
connection parameters listed in _CLIENT_PARAMS (socket_timeout=..., user and password in
the URL) and, for rediss://, _TLS_PARAMS (ssl_cert_reqs=...); any other is a ConfigError.
"""

from __future__ import annotations

import re
import struct
import uuid
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from .. import _redis_wire as W
from .._url import BackendURL
from ..campaign import Campaign
from ..engine import Balance, Claim, Decisions, Engine, RegionStatus, Summary
from ..errors import BackendError, ConfigError
from ..events import Closed, Completed, Event, Placed, validate_batch
from ..outcomes import Outcome
from .redis_nodes import Nodes

try:
    from .. import _redis_batch as _rb
except ImportError:  # not built: the plain-Python twins below do the same work
    _rb = None

_pack = msgspec.msgpack.Encoder().encode
_REGION = struct.Struct(W.REGION_STRUCT)
_BENEFICIARY = struct.Struct(W.BENEFICIARY_FORMAT)
_CLAIM_HEAD = struct.Struct(W.CLAIM_HEAD)
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LUA_EXACT = 2**53  # Lua numbers are doubles: integers above this are not exact
_INT_OPTIONS = {"buckets": (1, 16384), "call_events": (1, 65536), "wait": (0, 64),
                "wait_timeout": (1, 600_000)}
#: the engine's own URL parameters; the others are handed to redis-py
_ENGINE_PARAMS = ("prefix", *_INT_OPTIONS)


def _is_number(raw: str) -> bool:
    try:
        return float(raw) >= 0
    except ValueError:
        return False


_BOOLS = ("1", "0", "true", "false", "yes", "no")

#: the redis-py connection parameters a URL may carry (user and password also go in the
#: userinfo: redis://user:secret@host:6379/0). Not retry_on_timeout, retry_on_error or
#: protocol: the client never retries by itself and speaks RESP2.
_TYPED_CLIENT_PARAMS: dict[str, tuple[Callable[[str], bool], str]] = {
    "db": (str.isdigit, "a database number"),
    "socket_timeout": (_is_number, "a number of seconds"),
    "socket_connect_timeout": (_is_number, "a number of seconds"),
    "socket_keepalive": (lambda v: v.lower() in _BOOLS, "true or false"),
    "health_check_interval": (str.isdigit, "a whole number of seconds"),
    "max_connections": (lambda v: v.isdigit() and int(v) > 0, "a whole number above 0"),
    "ssl_check_hostname": (lambda v: v.lower() in _BOOLS, "true or false"),
    "ssl_cert_reqs": (lambda v: v in ("none", "optional", "required"),
                      "none, optional or required"),
}
_CLIENT_PARAMS = ("db", "username", "password", "client_name", "socket_timeout",
                  "socket_connect_timeout", "socket_keepalive", "health_check_interval",
                  "max_connections")
#: rediss:// only: redis:// connections take no TLS options
_TLS_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
               "ssl_password", "ssl_check_hostname")
_CLAIM_FIELDS = set(Claim.__struct_fields__)

DUPLICATE = int(Outcome.DUPLICATE)
NEW_CANDIDATE, CORE_PLACED = W.NEW_CANDIDATE, W.CORE_PLACED
_PLACED_CODES = {str(int(o)) for o in Outcome if o <= Outcome.BUDGET_EXHAUSTED}


class RedisEngine(Engine):
    scheme = "redis"
    shares_state = True
    keeps_state = True
    #: a batch pays two round trips whatever its size; one call_events-sized batch is one
    #: two-step call (larger ones are split so that no script runs long)
    preferred_batch = 2048

    def __init__(self, campaign: Campaign, url: str, *, cluster: bool = False,
                 prefix: str = "rc", buckets: int = 64, call_events: int = 2048,
                 wait: int = 0, wait_timeout: int = 1000) -> None:
        super().__init__(campaign)
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(f"backend URL: prefix {prefix!r} must match {_PREFIX_RE.pattern}")
        for name, value in (("buckets", buckets), ("call_events", call_events),
                            ("wait", wait), ("wait_timeout", wait_timeout)):
            lo, hi = _INT_OPTIONS[name]
            if not lo <= value <= hi:
                raise ConfigError(f"backend URL: {name}={value} must be within {lo}..{hi}")
        info = campaign.info
        self.budget = info.budget_points
        if self.budget and self.budget >= campaign.max_awardable_points():
            self.budget = 0  # every slot at once still fits: the budget can never bind
        if self.budget >= _LUA_EXACT:
            raise ConfigError(f"{campaign.source}: campaign.budget_points {info.budget_points} "
                              f"is above 2**53, which Redis scripts cannot count exactly")
        self.cap = info.max_claims_per_beneficiary
        self.region_cap = info.max_claims_per_beneficiary_per_region
        self.releases = campaign.releases
        self.prefix = prefix
        self.n_buckets = buckets
        self.call_events = call_events
        self.wait = (wait, wait_timeout) if wait else None
        self.cluster = cluster
        self.nodes = Nodes(url, cluster)
        self._client_id = uuid.uuid4().hex[:12]
        self._seq = 0
        #: test hook: called between the bucket step and the core step of each call
        self._between_steps: Callable[[], None] | None = None

        tag = f"{prefix}:{{{campaign.id}"
        self._tag = tag
        core = f"{tag}:core}}"
        (self._k_regions, self._k_claims, self._k_whos, self._k_scalars, self._k_calls,
         self._k_notes, self._k_stock, self._k_rdm, self._k_released) = self._core_keys = tuple(
            f"{core}:{k}" for k in ("r", "c", "w", "s", "k", "n", "t", "x", "l"))
        self._buckets = [(f"{tag}:o{b}}}:ord", f"{tag}:o{b}}}:n") for b in range(buckets)]
        # the core's region records are kept by campaign index: the fingerprint of the region
        # list makes a campaign of the same id but other regions an error, not a mix-up
        self._regions_fingerprint = _regions_fingerprint(campaign)
        self._settings = (f"{self.budget}|{self.cap}|{self.region_cap}|{int(self.releases)}|"
                          f"{int(campaign.settles_on_placed)}|{len(campaign.regions)}|"
                          f"{self._regions_fingerprint}")
        self._prize_args = {p.id: (p.cost_points, p.stock) for p in campaign.prizes}
        #: the compiled per-event work (rewardcore._redis_batch) when it is built
        self.compiled = _rb is not None
        # what a core call says about each region it names: code (exact, as text), index in
        # the campaign (1-based), slots, tiers
        self._region_args = {
            r.code: (str(r.code), index, r.slots,
                     ",".join(f"{t.upto}:{t.points}" for t in r.tiers))
            for index, r in enumerate(campaign.regions, 1)}

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        tls = url.partition("://")[0].startswith("rediss")
        u = BackendURL(url, known=(*_ENGINE_PARAMS, *_CLIENT_PARAMS,
                                   *(_TLS_PARAMS if tls else ())))
        cluster = u.scheme.endswith("+cluster")
        opts: dict[str, Any] = {}
        if (prefix := u.text("prefix")) is not None:
            opts["prefix"] = prefix
        for key in _INT_OPTIONS:
            if (raw := u.text(key)) is not None:
                try:
                    opts[key] = int(raw)
                except ValueError:
                    raise u.error(f"{key}={raw!r} is not a whole number") from None
        for key, kind in _TYPED_CLIENT_PARAMS.items():
            raw = u.text(key)
            if raw is not None and not kind[0](raw):
                raise u.error(f"{key}={raw!r} must be {kind[1]}")
        parts = urlsplit(url)
        if not parts.hostname:
            raise u.error(f"needs a host, e.g. {u.scheme}://127.0.0.1:6379")
        if cluster and (parts.path not in ("", "/", "/0") or u.text("db", "0") != "0"):
            raise u.error("a cluster has only database 0")
        # what is left is redis-py's own, in the order given
        rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                if k not in _ENGINE_PARAMS]
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
        return cls(campaign, plain, cluster=cluster, **opts)

    # -- the hot path -----------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> Decisions:
        if type(events) is not list:
            events = list(events)
        # the whole batch is checked before the first call: a refused batch changes nothing
        if _rb is not None and self.compiled:
            _rb.check_batch(events, self.campaign.pays_merchant)
        else:
            validate_batch(events)
        n = len(events)
        out = Decisions.empty(n)
        step = self.call_events
        for k in range(0, n, step):
            self._apply_call(events, k, min(n, k + step), out)
        return out

    def _next_call(self) -> str:
        self._seq += 1
        return f"{self._client_id}.{self._seq}"

    def _apply_call(self, events: list[Event], lo: int, hi: int, out: Decisions) -> None:
        c = self.campaign
        call = self._next_call()
        nb = self.n_buckets
        if _rb is not None and self.compiled:
            args, bucket, pos = _rb.bucket_items(events, lo, hi, nb, c.starts_ms, c.ends_ms,
                                                 c.info.min_paid_cents, self._region_args,
                                                 c.pays_merchant)
        else:
            args, bucket, pos = self._bucket_items(events, lo, hi)
        used = [b for b in range(nb) if args[b]]
        # one call per bucket on a cluster (a script's keys share a slot); one call for all
        # on a standalone server, which saves each bucket call's fixed cost
        groups = [[b] for b in used] if self.cluster else [used] if used else []
        calls = [("mark_orders", tuple(k for b in g for k in self._buckets[b]),
                  (call, *[_pack(args[b]) for b in g])) for g in groups]
        got = self.nodes.run(calls, "mark orders", self.wait) if calls else []
        replies: list[Any] = [None] * nb
        for g, reply in zip(groups, got, strict=True):
            for b, part in zip(g, reply, strict=True):
                replies[b] = part
        if self._between_steps is not None:
            self._between_steps()
        if _rb is not None and self.compiled:
            parts, rows, reg_flat = _rb.core_items(events, lo, bucket, pos, replies,
                                                   self._region_args, self._prize_args,
                                                   c.pays_merchant, out.outcome)
            core = CoreItems(*parts)
        else:
            core, rows, reg_flat = self._core_items(events, lo, bucket, pos, replies,
                                                    out.outcome)
        if core.items:
            self._core(call, core, rows, reg_flat, out)

    def _bucket_items(self, events: list[Event], lo: int,
                      hi: int) -> tuple[list[list[Any]], list[int], list[int]]:
        """The bucket step's items (the plain-Python twin of _redis_batch.bucket_items)."""
        c = self.campaign
        nb = self.n_buckets
        crc = zlib.crc32
        args: list[list[Any]] = [[] for _ in range(nb)]
        bucket: list[int] = []
        pos: list[int] = []
        for i in range(lo, hi):
            ev = events[i]
            t = type(ev)
            if t is Placed:
                refused = c.placed_outcome(ev.ts, ev.region, ev.paid_cents)
                arg = NEW_CANDIDATE if refused is None else int(refused)
                kind = W.BUCKET_PLACED
            elif t is Closed:
                kind, arg = W.BUCKET_CLOSED, 0
            elif t is Completed:
                kind, arg = W.BUCKET_COMPLETED, str(ev.ts)
            else:
                bucket.append(-1)
                pos.append(0)
                continue
            oid = ev.order_id
            b = crc(oid.encode("utf-8")) % nb
            a = args[b]
            bucket.append(b)
            pos.append(len(a) // 3)
            a += (kind, oid, arg)
        return args, bucket, pos

    def _core_items(self, events: list[Event], lo: int, bucket: list[int], pos: list[int],
                    replies: list[Any], outcome: Any) -> tuple[CoreItems, list[int], list[Any]]:
        """The core step's items (the plain-Python twin of _redis_batch.core_items)."""
        regions = self._region_args
        pays_merchant = self.campaign.pays_merchant
        items: list[Any] = []
        whos: dict[str, int] = {}  # beneficiary -> its place in the call's list (1-based)
        ids: list[bytes] = []
        at = 1  # where the next candidate's ids start in the call's ids (1-based, in bytes)
        rare: list[int] = []
        rows: list[int] = []  # per core item: its event row, or -1 when only the core cares
        reg_index: dict[int, int] = {}
        reg_flat: list[Any] = []

        def region_index(code: int) -> int:
            ri = reg_index.get(code)
            if ri is None:
                ri = reg_index[code] = len(reg_index) + 1
                reg_flat.extend(regions[code])
            return ri

        def who_index(who: str) -> int:
            j = whos.get(who)
            if j is None:
                j = whos[who] = len(whos) + 1
            return j

        for j, b in enumerate(bucket):
            i = lo + j
            ev: Any = events[i]
            if b < 0:
                cost, stock = self._prize_args.get(ev.prize, (-1, 0))
                rare.append(len(items) + 1)
                items += (W.CORE_REDEEM, ev.redemption_id, who_index(ev.beneficiary), ev.prize,
                          ev.qty, cost, stock)
                rows.append(i)
                continue
            r = replies[b][pos[j]]
            if type(r) is int:
                if r == NEW_CANDIDATE:
                    who = ev.merchant_id if pays_merchant else ev.agent_id
                    items += (CORE_PLACED, who_index(who), region_index(ev.region), at)
                    record = _candidate_ids(ev.order_id, _ts(ev.ts))
                    ids.append(record)
                    at += len(record)
                    rows.append(i)
                else:
                    outcome[i] = r
                continue
            head = r[0]
            if head == "N" or head == "Q":
                if head == "Q" and ev.region not in regions:
                    outcome[i] = DUPLICATE  # a redelivery unlike its first delivery
                    continue
                if head == "N":
                    ref, early = "", r[1:]
                    rows.append(i)
                else:
                    ref, _, early = r[1:].partition("=")
                    outcome[i] = DUPLICATE
                    rows.append(-1)
                who = ev.merchant_id if pays_merchant else ev.agent_id
                rare.append(len(items) + 1)
                items += (W.CORE_PLACED_AGAIN, ev.order_id, who_index(who),
                          region_index(ev.region), _ts(ev.ts), early, ref)
            else:  # "C<ref>": a closed/completed event of an order the core decides
                kind = W.CORE_CLOSED if type(ev) is Closed else W.CORE_COMPLETED
                rare.append(len(items) + 1)
                items += (kind, ev.order_id, _ts(ev.ts), r[1:])
                rows.append(i)
        return CoreItems(items, list(whos), b"".join(ids), rare), rows, reg_flat

    def _core(self, call: str, core: CoreItems, rows: list[int], reg_flat: list[Any],
              out: Decisions) -> None:
        packed_regs = _pack(reg_flat)
        for _attempt in range(4):
            args = (call, self._settings, packed_regs, _pack(core.items), _pack(core.whos),
                    core.ids, _pack(core.rare))
            reply = self.nodes.run([("decide_batch", self._core_keys, args)],
                                   "decide batch", self.wait)[0]
            if len(reply) != 1 or type(reply[0]) is not str:
                break
            if reply[0] != W.CALL_CANCELLED:
                raise BackendError(f"redis: core call {call} was applied before ({reply[0]})")
            # A redelivery elsewhere adopted this call's orders: send the same items again
            # as references to this call; each order is decided once (the core's notes).
            core = core.as_refs(call)
            call = self._next_call()
        else:
            raise BackendError("redis: the core call was cancelled again and again")
        oc, sl, pt = out.outcome, out.slot, out.points
        rk = getattr(out, "rank", None)
        if _rb is not None and self.compiled:
            _rb.fill(reply, rows, oc, sl, pt, rk)
            return
        for j, i in enumerate(rows):
            if i < 0:
                continue
            x = 4 * j
            oc[i] = reply[x]
            sl[i] = reply[x + 1]
            pt[i] = reply[x + 2]
            if rk is not None:
                rk[i] = reply[x + 3]

    # -- views ------------------------------------------------------------------------------
    def _hgetall_many(self, keys: list[str], what: str, raw: bool = False) -> list[dict]:
        per_node: dict[Any, list[int]] = {}
        for x, key in enumerate(keys):
            per_node.setdefault(self.nodes.node_of(key), []).append(x)
        got = self.nodes.commands({node: [("HGETALL", keys[x]) for x in idx]
                                   for node, idx in per_node.items()}, what, raw)
        out: list[dict] = [{} for _ in keys]
        for node, idx in per_node.items():
            for x, reply in zip(idx, got[node], strict=True):
                out[x] = _as_dict(reply)
        return out

    def _one(self, what: str, *command: Any) -> Any:
        """One command on the node of its key (command[1]), its reply as bytes."""
        node = self.nodes.node_of(command[1])
        return self.nodes.commands({node: [command]}, what, raw=True)[node][0]

    def _regions_read(self, what: str, start: int, end: int,
                      also: Sequence[tuple[Any, ...]] = ()) -> tuple[bytes, list[Any]]:
        """Bytes start..end (inclusive, -1 the last) of the core's region records, b"" when
        there are none yet, and the replies to `also` (more commands on the core's keys, in
        the same round trip); BackendError when the records are another region list's."""
        fp = self._regions_fingerprint
        node = self.nodes.node_of(self._k_regions)
        head, part, *rest = self.nodes.commands(
            {node: [("GETRANGE", self._k_regions, 0, len(fp) - 1),
                    ("GETRANGE", self._k_regions, start, end), *also]}, what, raw=True)[node]
        if head and head != fp.encode():
            raise BackendError(f"redis {node.name}: {what}: {W.OTHER_REGIONS}")
        return part, rest

    def claims(self) -> list[Claim]:
        table = self._hgetall_many([self._k_claims], "read claims", raw=True)[0]
        return [_claim(oid.decode(), rec) for oid, rec in table.items()]

    def balances(self) -> dict[str, Balance]:
        table = self._hgetall_many([self._k_whos], "read balances", raw=True)[0]
        out = {}
        for who, rec in table.items():
            bal = _balance(rec)
            if not bal.is_zero():
                out[who.decode()] = bal
        return out

    def balance(self, beneficiary: str) -> Balance:
        rec = self._one("read a balance", "HGET", self._k_whos, beneficiary)
        return _balance(rec) if rec else Balance()

    def outcome_counts(self) -> dict[Outcome, int]:
        keys = [k for _, k in self._buckets] + [self._k_scalars]
        counts: dict[Outcome, int] = {}
        for table in self._hgetall_many(keys, "read outcome counts"):
            for field, value in table.items():
                if field in _PLACED_CODES and int(value):
                    o = Outcome(int(field))
                    counts[o] = counts.get(o, 0) + int(value)
        return counts

    def redemptions(self) -> dict[str, Outcome]:
        table = self._hgetall_many([self._k_rdm], "read redemptions")[0]
        return {rid: Outcome(int(v.split("|", 1)[0])) for rid, v in table.items()}

    def stock(self) -> dict[str, int]:
        taken = self._hgetall_many([self._k_stock], "read stock")[0]
        return {p.id: p.stock - int(taken.get(p.id, 0)) for p in self.campaign.prizes}

    def region_status(self, code: int) -> RegionStatus | None:
        region = self.campaign.region_by_code.get(code)
        if region is None:
            return None
        at = len(self._regions_fingerprint) + (self._region_args[code][1] - 1) * W.REGION_REC
        rec, _ = self._regions_read("read region status", at, at + W.REGION_REC - 1)
        used, taken, rel, _rank = _REGION.unpack(rec) if rec else (0, 0, 0, 0)
        return RegionStatus(code, region.slots, taken, region.slots - used + rel,
                            tuple((t.upto, t.points) for t in region.tiers))

    def summary(self) -> Summary:
        # Counters only, one round trip: claims and balances would mean reading every claim
        # and beneficiary, too much for every scrape.
        blob, (spent,) = self._regions_read("read region counters", 0, -1,
                                            [("HGET", self._k_scalars, "spent")])
        left = [r.slots for r in self.campaign.regions]
        if blob:
            records = _REGION.iter_unpack(blob[len(self._regions_fingerprint):])
            for x, (used, _taken, rel, _rank) in enumerate(records):
                left[x] += rel - used
        # spent is kept only when a budget binds
        return Summary(tuple(left), self.stock(), int(spent or 0) if self.budget else None)

    # -- lifecycle --------------------------------------------------------------------------
    def reset(self) -> None:
        """Delete every key of this campaign under the prefix, on every node (SCAN + UNLINK)."""
        pattern = _glob_escape(self._tag) + ":*"
        for node in self.nodes.all_nodes():
            cursor = 0
            while True:
                cursor, keys = self.nodes.command(node, "SCAN", cursor, "MATCH", pattern,
                                                  "COUNT", 1000)
                if keys:
                    # keys of one SCAN page may sit in different slots: one UNLINK each
                    self.nodes.commands({node: [("UNLINK", k) for k in keys]}, "reset")
                if int(cursor) == 0:
                    break

    def close(self) -> None:
        self.nodes.close()


class RedisClusterEngine(RedisEngine):
    scheme = "redis+cluster"


def _ts(ts: int) -> str:
    """A ts travels to the core as text: the core only stores it, and text needs no number
    formatting in Lua (which is slow, and inexact from 10**14 on)."""
    return str(ts)


def _candidate_ids(oid: str, ts: str) -> bytes:
    """A new candidate's order id and ts as the core reads them (W.CANDIDATE_IDS)."""
    raw = oid.encode("utf-8")
    return len(raw).to_bytes(4, "little") + raw + bytes((len(ts),)) + ts.encode("ascii")


class CoreItems(NamedTuple):
    """What one core call carries besides its regions (decide_batch.lua ARGV[4] to [7])."""

    items: list[Any]  # the items, flat
    whos: list[str]  # the beneficiaries the items name by place (1-based)
    ids: bytes  # the new candidates' order ids and ts, W.CANDIDATE_IDS each
    rare: list[int]  # the places (1-based) of the items other than CORE_PLACED

    def as_refs(self, call: str) -> CoreItems:
        """The items of a cancelled core call, each now naming that call as its order's."""
        items, old = [], self.items
        rare: list[int] = []
        p = 0
        while p < len(old):
            kind = old[p]
            rare.append(len(items) + 1)
            if kind == W.CORE_PLACED:  # becomes "placed again", naming its call
                who, ri, at = old[p + 1:p + 4]
                oid, ts = _texts(self.ids, at - 1, (4, 1))  # W.CANDIDATE_IDS
                items += (W.CORE_PLACED_AGAIN, oid, who, ri, ts, "", call)
                p += 4
            elif kind == W.CORE_PLACED_AGAIN:
                items += old[p:p + 6]
                items.append(old[p + 6] or call)
                p += 7
            elif kind == W.CORE_REDEEM:
                items += old[p:p + 7]
                p += 7
            else:
                items += (*old[p:p + 3], old[p + 3] or call)
                p += 4
        return CoreItems(items, self.whos, b"", rare)


def _texts(rec: bytes, at: int, widths: Sequence[int]) -> list[str]:
    """The UTF-8 texts of `rec` from byte `at` on, each after its little-endian length of
    the given width (Lua struct's `I4c0` and `Bc0`)."""
    texts = []
    for width in widths:
        n = int.from_bytes(rec[at:at + width], "little")
        texts.append(rec[at + width:at + width + n].decode())
        at += width + n
    return texts


def _claim(oid: str, rec: bytes) -> Claim:
    """A claim from its record in the core (W.CLAIM_FORMAT)."""
    slot, points, rank, _index, state = _CLAIM_HEAD.unpack_from(rec)
    # region code, ts, settled_ts, revoked_ts, beneficiary
    code, ts, sts, rts, who = _texts(rec, _CLAIM_HEAD.size, (1, 1, 1, 1, 4))
    values = {"order_id": oid, "region": int(code), "slot": slot, "points": int(points),
              "beneficiary": who, "state": W.CLAIM_STATES[state.decode()], "ts": int(ts),
              "rank": int(rank), "settled_ts": int(sts), "revoked_ts": int(rts)}
    return Claim(**{k: v for k, v in values.items() if k in _CLAIM_FIELDS})


def _regions_fingerprint(campaign: Campaign) -> str:
    """8 hex digits naming the campaign's region list, in order (the core's record index),
    and the version of the core's records (W.LAYOUT)."""
    codes = ",".join(str(r.code) for r in campaign.regions)
    return f"{zlib.crc32(f'{W.LAYOUT}:{codes}'.encode()):08x}"


def _balance(rec: bytes) -> Balance:
    p, c, r, _held = _BENEFICIARY.unpack_from(rec)
    return Balance(int(p), int(c), int(r))


def _as_dict(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return reply
    return {reply[x]: reply[x + 1] for x in range(0, len(reply), 2)}


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)



__all__ = ["RedisEngine", "RedisClusterEngine", "BackendError"]
