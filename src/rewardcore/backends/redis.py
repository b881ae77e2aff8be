"""`redis://host:port/db` and `redis+cluster://host:port`: claims decided by Lua scripts in
Redis (or Valkey) >= 7, so every gateway host shares one "first N orders" per region.

Layout and protocol are in docs/redis.md. In short, a batch goes through
  A. mark_orders (order buckets): dedup, tombstones, and outcomes that need no region;
  then, per round: L1 grant_capacity (ledger) -> decide_claims (regions) -> L2 settle_claims
  (ledger); redemptions run on the ledger in their place in the batch.
Each step is one EVALSHA per hash tag, pipelined per node.

URL options (query string): prefix=rc (key prefix), buckets=16 (order buckets),
soldout_ttl=1.0 (seconds a sold-out region is trusted without news), plus redis-py's own
(socket_timeout=..., ssl_cert_reqs=..., password in the URL, rediss:// for TLS).
"""

from __future__ import annotations

import re
import time
import uuid
import zlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from .._url import redact_url
from ..campaign import Campaign
from ..engine import Balance, Claim, Decisions, Engine, RegionStatus, Summary
from ..errors import BackendError, ConfigError
from ..events import Closed, Completed, Event, Placed, Redeem, validate_batch
from ..outcomes import Outcome
from .redis_nodes import Call, Nodes

_pack = msgspec.msgpack.Encoder().encode
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LUA_EXACT = 2**53  # Lua numbers are doubles: integers above this are not exact
_OUR_OPTIONS = ("prefix", "buckets", "soldout_ttl")

DUPLICATE, CLOSED = int(Outcome.DUPLICATE), int(Outcome.CLOSED)
AWARDED, REVOKED = int(Outcome.AWARDED), int(Outcome.REVOKED)
UNCHANGED = int(Outcome.UNCHANGED)


class _Region:
    """Everything the client sends about one region, computed once."""

    __slots__ = ("code", "keys", "static", "need")

    def __init__(self, code: int, keys: tuple[str, ...], static: tuple[Any, ...],
                 need: str) -> None:
        self.code = code
        self.keys = keys  # r (state), ord (decisions), who (holders)
        self.static = static  # decide_claims ARGV[1..5]
        self.need = need  # "maxpoints:minpositivepoints" for grant_capacity


class RedisEngine(Engine):
    scheme = "redis"
    shares_state = True
    keeps_state = True
    #: a batch pays round trips to every node it touches: larger batches amortise it
    preferred_batch = 4096

    def __init__(self, campaign: Campaign, url: str, *, cluster: bool = False,
                 prefix: str = "rc", buckets: int = 16, soldout_ttl: float = 1.0) -> None:
        super().__init__(campaign)
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(f"backend URL: prefix {prefix!r} must match {_PREFIX_RE.pattern}")
        if not 1 <= buckets <= 4096:
            raise ConfigError(f"backend URL: buckets={buckets} must be within 1..4096")
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
        self.soldout_ttl = soldout_ttl
        self.cluster = cluster
        self.nodes = Nodes(url, cluster)
        self._client_id = uuid.uuid4().hex[:12]
        self._round = 0

        tag = f"{prefix}:{{{campaign.id}"
        self._tag = tag
        ledger = f"{tag}:ledger}}"
        self._k_l, self._k_used, self._k_lc, self._k_bal, self._k_grants = (
            f"{ledger}:l", f"{ledger}:used", f"{ledger}:lc", f"{ledger}:bal", f"{ledger}:grants")
        self._k_stock, self._k_rdm = f"{ledger}:stock", f"{ledger}:rdm"
        self._ledger_keys = (self._k_l, self._k_used, self._k_lc, self._k_bal, self._k_grants)
        self._buckets = [(f"{tag}:o{b}}}:ord", f"{tag}:o{b}}}:n") for b in range(buckets)]
        state = "c" if campaign.settles_on_placed else "p"
        self._regions: dict[int, _Region] = {}
        for r in campaign.regions:
            base = f"{tag}:{r.code}}}"
            tiers = ",".join(f"{t.upto}:{t.points}" for t in r.tiers)
            positive = [t.points for t in r.tiers if t.points > 0]
            maxp = max(t.points for t in r.tiers)
            minp = min(positive) if positive else _LUA_EXACT
            self._regions[r.code] = _Region(
                r.code, (f"{base}:r", f"{base}:ord", f"{base}:who"),
                (r.slots, int(self.releases), state, self.region_cap, tiers),
                f"{maxp}:{minp}")
        # The local sold-out cache: region code -> its holders (beneficiary -> claims),
        # and the ledger's tokens-out per beneficiary as last seen (for the cap label).
        self._soldout: dict[int, dict[str, int]] = {}
        self._soldout_since = time.monotonic()
        self._held: dict[str, int] = {}
        self._relver: int | None = None
        if self.cap:
            self._load_held()

    def _load_held(self) -> None:
        """Tokens out per beneficiary, all of them, so that a beneficiary missing from the
        mirror has none (the mirror is then exact in one process)."""
        node = self.nodes.node_of(self._k_used)
        got = self.nodes.command(node, "HGETALL", self._k_used)
        self._held = {w: int(v) for w, v in _as_dict(got).items()}

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        parts = urlsplit(url)
        cluster = parts.scheme.endswith("+cluster")
        opts: dict[str, Any] = {}
        rest = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OUR_OPTIONS:
                try:
                    opts[key] = value if key == "prefix" else (
                        int(value) if key == "buckets" else float(value))
                except ValueError:
                    raise ConfigError(f"backend URL {redact_url(url)}: {key}={value!r} is not a "
                                      "number") from None
            else:
                rest.append((key, value))
        if not parts.hostname:
            raise ConfigError(f"backend URL {redact_url(url)}: needs a host, e.g. "
                              f"{parts.scheme}://127.0.0.1:6379")
        if cluster and parts.path not in ("", "/", "/0"):
            raise ConfigError(f"backend URL {redact_url(url)}: a cluster has only database 0")
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
        return cls(campaign, plain, cluster=cluster, **opts)

    # -- the hot path -----------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> Decisions:
        if type(events) is not list:
            events = list(events)
        validate_batch(events)  # before the first call: a refused batch changes nothing
        n = len(events)
        out = Decisions.empty(n)
        if not n:
            return out
        self._check_soldout_cache()
        items = self._mark_orders(events, out)
        pos = 0
        while pos < len(items):
            end = pos
            if items[pos][0] == "x":
                while end < len(items) and items[end][0] == "x":
                    end += 1
                self._redeem(events, items[pos:end], out)
            else:
                while end < len(items) and items[end][0] != "x":
                    end += 1
                self._rounds(events, items[pos:end], out)
            pos = end
        return out

    def _check_soldout_cache(self) -> None:
        """Drop the sold-out cache when it is too old or a client released a slot since the
        last batch began. The release counter is read before this batch's regions are, so
        a release that lands while they are read is seen at the next batch."""
        if self._soldout and time.monotonic() - self._soldout_since > self.soldout_ttl:
            self._soldout.clear()
        if self.releases:
            node = self.nodes.node_of(self._k_l)
            ver = int(self.nodes.command(node, "HGET", self._k_l, "relver") or 0)
            if ver != self._relver:
                self._soldout.clear()
                self._relver = ver

    def _mark_orders(self, events: Sequence[Event], out: Decisions) -> list[tuple]:
        """Step A: one mark_orders call per order bucket; returns the work left, in order."""
        c = self.campaign
        starts, ends, min_paid = c.starts_ms, c.ends_ms, c.info.min_paid_cents
        regions = self._regions
        pays_merchant = c.pays_merchant
        soldout = self._soldout
        cap, region_cap = self.cap, self.region_cap
        held = self._held
        strict_cache = bool(self.releases or cap or region_cap)
        close_seen = False
        sent_whos: set[str] = set()  # beneficiaries with an order sent to a region
        nb = self.n_buckets
        crc = zlib.crc32
        args: list[list[Any]] = [[] for _ in range(nb)]
        where: list[tuple[int, int]] = []  # event index -> (bucket, position in its reply)
        wants: list[Any] = [None] * len(events)
        for i, ev in enumerate(events):
            t = type(ev)
            if t is Placed:
                code = ev.region
                # also a redelivery's: it re-drives the first delivery if that was never decided
                who = wants[i] = ev.merchant_id if pays_merchant else ev.agent_id
                if not starts <= ev.ts < ends:
                    prop = "=3"
                elif code not in regions:
                    prop = "=4"
                elif ev.paid_cents < min_paid:
                    prop = "=5"
                else:
                    prop = None
                    entry = soldout.get(code)
                    if entry is not None and not (close_seen and strict_cache):
                        prop = self._cached(entry, who, cap, region_cap, held, sent_whos)
                    if prop is None:
                        prop = "R" + str(code)
                        sent_whos.add(who)
                kind = "p"
                oid = ev.order_id
            elif t is Closed:
                kind, oid, prop = "c", ev.order_id, ""
                close_seen = True
            elif t is Completed:
                kind, oid, prop = "d", ev.order_id, ""
            elif t is Redeem:
                where.append((-1, 0))
                continue
            else:
                raise TypeError(f"event {i} of the batch is not an event: {t.__name__}")
            b = crc(oid.encode("utf-8")) % nb
            a = args[b]
            where.append((b, len(a) // 3))
            a.append(kind)
            a.append(oid)
            a.append(prop)
        calls: list[Call] = []
        call_of: dict[int, int] = {}
        for b in range(nb):
            if args[b]:
                call_of[b] = len(calls)
                calls.append(("mark_orders", self._buckets[b], [_pack(args[b])]))
        replies = self.nodes.run(calls, "mark orders") if calls else []
        items: list[tuple] = []
        oc = out.outcome
        for i, (b, k) in enumerate(where):
            if b < 0:
                items.append(("x", i))
                continue
            r = replies[call_of[b]][k]
            head = r[0]
            if head == "=":
                oc[i] = int(r[1:])
            elif head == "N":
                items.append(("p", i, int(events[i].region), wants[i]))
            elif head == "D":
                oc[i] = DUPLICATE
                items.append(("q", i, int(r[1:]), wants[i]))
            else:  # "R<code>": closed / completed of an order placed into a region
                items.append(("c" if type(events[i]) is Closed else "d", i, int(r[1:])))
        return items

    @staticmethod
    def _cached(entry: dict[str, int], who: str, cap: int, region_cap: int,
                held: dict[str, int], sent_whos: set[str]) -> str | None:
        """The outcome of a new order in a region known sold out, or None to ask Redis.

        Exact in one process: the region has no free slot, its holders only change by a
        revocation (which drops the entry), and the beneficiary's claim count is the
        ledger's as of the last settle, unless this batch already sent one of its orders
        to a region (or a close came first, checked by the caller)."""
        if cap:
            if who in sent_whos:
                return None
            if held.get(who, 0) >= cap:
                return "=6"
        if region_cap and entry.get(who, 0) >= region_cap:
            return "=7"
        return "=8"

    def _rounds(self, events: Sequence[Event], seg: list[tuple], out: Decisions) -> None:
        """Steps L1, regions, L2 for a run of items without redemptions. L1 may defer items
        that depend on capacity not yet known; they form the next round, in order."""
        capped = bool(self.budget or self.cap)
        while seg:
            self._round += 1
            gid = f"{self._client_id}:{self._round}"
            grants: dict[int, Any] = {}  # position in round -> allowance (int) or "#6"
            l1 = [it for it in seg if capped or it[0] == "c"]
            rnd, later = seg, []
            if l1:
                flat: list[Any] = []
                for it in l1:
                    kind = it[0]
                    if kind in "pq":
                        flat += ("p", events[it[1]].order_id, str(it[2]), it[3],
                                 self._regions[it[2]].need)
                    else:
                        flat += (kind, events[it[1]].order_id, str(it[2]), "", "")
                verdicts = self.nodes.run(
                    [("grant_capacity", self._ledger_keys,
                      (self.budget, self.cap, gid, _pack(flat)))], "grant capacity")[0]
                if len(l1) == len(seg):
                    rnd = []
                    for it, v in zip(seg, verdicts, strict=True):
                        if v == "-":
                            later.append(it)
                        else:
                            if it[0] in "pq":
                                grants[len(rnd)] = v
                            rnd.append(it)
            self._decide(events, rnd, grants, gid, out)
            seg = later

    def _decide(self, events: Sequence[Event], rnd: list[tuple], grants: dict[int, Any],
                gid: str, out: Decisions) -> None:
        by_region: dict[int, list[Any]] = {}
        slots_of: dict[int, list[int]] = {}
        for j, it in enumerate(rnd):
            kind, i, code = it[0], it[1], it[2]
            ev = events[i]
            a = by_region.get(code)
            if a is None:
                a = by_region[code] = []
                slots_of[code] = []
            slots_of[code].append(j)
            if kind in "pq":
                g = grants.get(j, -1)
                if isinstance(g, str):  # "#6": the ledger decided the beneficiary cap
                    a += ("f", ev.order_id, it[3], "", int(g[1:]))
                else:
                    a += (kind, ev.order_id, it[3], str(ev.ts), g)
            else:
                a += (kind, ev.order_id, "", "", 0)
        calls: list[Call] = []
        codes = list(by_region)
        for code in codes:
            reg = self._regions[code]
            a = by_region[code]
            calls.append(("decide_claims", reg.keys, (*reg.static, _pack(a))))
        replies = self.nodes.run(calls, "decide claims")

        reports: dict[str, tuple[str, int, str]] = {}
        unused_pts = 0
        unused_tok: dict[str, int] = {}
        released = False
        cap = self.cap
        rows: list[int] = []
        outs: list[int] = []
        slots: list[int] = []
        points: list[int] = []
        for code, reply in zip(codes, replies, strict=True):
            js = slots_of[code]
            b = 0
            for j in js:
                it = rnd[j]
                kind, i = it[0], it[1]
                o, s, p, state = reply[b], reply[b + 1], reply[b + 2], reply[b + 4]
                if kind != "q":
                    rows.append(i)
                    outs.append(o)
                    if o == UNCHANGED:  # the claim rides along only for the ledger
                        slots.append(0)
                        points.append(0)
                    else:
                        slots.append(s)
                        points.append(p)
                if state:
                    reports[events[i].order_id] = (reply[b + 3], p, state)
                if kind == "p" or kind == "q":
                    g = grants.get(j, -1)
                    if g.__class__ is int:
                        won = o == AWARDED and reply[b + 5] == 1
                        if g > 0:
                            unused_pts += g - (p if won else 0)
                        if cap and not won:
                            unused_tok[it[3]] = unused_tok.get(it[3], 0) + 1
                elif o == REVOKED:
                    released = released or self.releases
                    self._soldout.pop(code, None)
                b += 6
            tail = reply[b:]
            if tail[0] == 1:
                if not self._soldout:
                    self._soldout_since = time.monotonic()
                self._soldout[code] = {tail[x]: int(tail[x + 1]) for x in range(1, len(tail), 2)}
            else:
                self._soldout.pop(code, None)
        if rows:
            out.outcome[rows] = outs
            out.slot[rows] = slots
            out.points[rows] = points
        granted = any(not isinstance(g, str) and (g > 0 or self.cap) for g in grants.values())
        if reports or granted or released:
            toks: list[Any] = []
            for who, k in unused_tok.items():
                toks += (who, k)
            claims: list[Any] = []
            for oid, (who, p, state) in reports.items():
                claims += (oid, who, p, state)
            args = (gid if granted else "", unused_pts, int(bool(self.budget)),
                    int(bool(self.cap)), int(released), _pack(toks), _pack(claims))
            reply = self.nodes.run([("settle_claims", self._ledger_keys, args)],
                                   "settle claims")[0]
            for x in range(0, len(reply), 2):
                self._held[reply[x]] = int(reply[x + 1])

    def _redeem(self, events: Sequence[Event], items: list[tuple], out: Decisions) -> None:
        args: list[Any] = []
        for it in items:
            ev = events[it[1]]
            prize = self.campaign.prize_by_id.get(ev.prize)
            args += (ev.redemption_id, ev.beneficiary, ev.prize, ev.qty,
                     prize.cost_points if prize else -1, prize.stock if prize else 0)
        reply = self.nodes.run([("redeem_points", (self._k_bal, self._k_stock, self._k_rdm),
                                 (_pack(args),))], "redeem")[0]
        for m, it in enumerate(items):
            out.outcome[it[1]] = int(reply[2 * m])
            out.points[it[1]] = int(reply[2 * m + 1])

    # -- views ------------------------------------------------------------------------------
    def _hgetall_many(self, keys: list[str], what: str) -> list[dict[str, str]]:
        per_node: dict[Any, list[int]] = {}
        for x, key in enumerate(keys):
            per_node.setdefault(self.nodes.node_of(key), []).append(x)
        got = self.nodes.commands({node: [("HGETALL", keys[x]) for x in idx]
                                   for node, idx in per_node.items()}, what)
        out: list[dict[str, str]] = [{} for _ in keys]
        for node, idx in per_node.items():
            for x, reply in zip(idx, got[node], strict=True):
                out[x] = _as_dict(reply)
        return out

    def claims(self) -> list[Claim]:
        codes = list(self._regions)
        tables = self._hgetall_many([self._regions[c].keys[1] for c in codes], "read claims")
        out = []
        for code, table in zip(codes, tables, strict=True):
            for oid, rec in table.items():
                if rec.startswith("#"):
                    continue
                slot, points, state, ts, who = rec.split("|", 4)
                out.append(Claim(oid, code, int(slot), int(points), who,
                                 {"p": "pending", "c": "confirmed", "r": "revoked"}[state],
                                 int(ts)))
        return out

    def balances(self) -> dict[str, Balance]:
        table = self._hgetall_many([self._k_bal], "read balances")[0]
        acc: dict[str, list[int]] = {}
        for field, value in table.items():
            kind, _, who = field.partition(":")
            row = acc.setdefault(who, [0, 0, 0])
            row["pcr".index(kind)] += int(value)
        return {who: Balance(*row) for who, row in acc.items() if any(row)}

    def outcome_counts(self) -> dict[Outcome, int]:
        keys = [k for _, k in self._buckets] + [r.keys[0] for r in self._regions.values()]
        counts: dict[Outcome, int] = {}
        for table in self._hgetall_many(keys, "read outcome counts"):
            for field, value in table.items():
                if field.isdigit() and int(value):
                    o = Outcome(int(field))
                    counts[o] = counts.get(o, 0) + int(value)
        return counts

    def redemptions(self) -> dict[str, Outcome]:
        table = self._hgetall_many([self._k_rdm], "read redemptions")[0]
        return {rid: Outcome(int(v.split("|", 1)[0])) for rid, v in table.items()}

    def stock(self) -> dict[str, int]:
        taken = self._hgetall_many([self._k_stock], "read stock")[0]
        return {p.id: p.stock - int(taken.get(p.id, 0)) for p in self.campaign.prizes}

    def balance(self, beneficiary: str) -> Balance:
        node = self.nodes.node_of(self._k_bal)
        got = self.nodes.command(node, "HMGET", self._k_bal, f"p:{beneficiary}",
                                 f"c:{beneficiary}", f"r:{beneficiary}")
        return Balance(*(int(v or 0) for v in got))

    def region_status(self, code: int) -> RegionStatus | None:
        reg = self._regions.get(code)
        if reg is None:
            return None
        node = self.nodes.node_of(reg.keys[0])
        got = self.nodes.commands({node: [("HMGET", reg.keys[0], "used", "taken")]},
                                  "read region status")[node][0]
        used, taken = int(got[0] or 0), int(got[1] or 0)
        slots = reg.static[0]
        remaining = slots - taken if self.releases else slots - used
        region = self.campaign.region_by_code[code]
        return RegionStatus(code, slots, taken, remaining,
                            tuple((t.upto, t.points) for t in region.tiers))

    def summary(self) -> Summary:
        # Counters only, one pipelined read per node: claims and balances would mean reading
        # every claim and beneficiary, too much for every scrape.
        per_node: dict[Any, list[int]] = {}
        regions = list(self._regions.values())
        for x, reg in enumerate(regions):
            per_node.setdefault(self.nodes.node_of(reg.keys[0]), []).append(x)
        got = self.nodes.commands({node: [("HMGET", regions[x].keys[0], "used", "taken")
                                          for x in idx]
                                   for node, idx in per_node.items()}, "read region counters")
        left = [0] * len(regions)
        for node, idx in per_node.items():
            for x, (used, taken) in zip(idx, got[node], strict=True):
                gone = int(taken or 0) if self.releases else int(used or 0)
                left[x] = regions[x].static[0] - gone
        spent = None
        if self.budget:  # the ledger keeps it only when there is a budget to enforce
            node = self.nodes.node_of(self._k_l)
            spent = int(self.nodes.command(node, "HGET", self._k_l, "spent") or 0)
        return Summary(tuple(left), self.stock(), spent)

    # -- maintenance ------------------------------------------------------------------------
    def rebuild_ledger(self) -> int:
        """Recompute the ledger's claim-derived figures (tokens, budget spent, pending and
        confirmed balances) from the regions' claims and drop open grants; returns how many
        grants were open. Run it only while no client applies events: a grant a dead client
        left open holds capacity back (never over-awards); this gives that capacity back."""
        flat: list[Any] = []
        for c in self.claims():
            flat += (c.order_id, c.beneficiary, c.points, c.state[0])
        reply = self.nodes.run([("rebuild_ledger", self._ledger_keys, (_pack(flat),))],
                               "rebuild ledger")[0]
        if self.cap:
            self._load_held()
        return int(reply)

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
        self._soldout.clear()
        self._held = {}
        self._relver = None

    def close(self) -> None:
        self.nodes.close()


class RedisClusterEngine(RedisEngine):
    scheme = "redis+cluster"


def _as_dict(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return reply
    return {reply[x]: reply[x + 1] for x in range(0, len(reply), 2)}


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)



__all__ = ["RedisEngine", "RedisClusterEngine", "BackendError"]
