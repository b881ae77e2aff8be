"""The daemon's pages for people: participants, the public, operators.

Server-rendered HTML (one template, a few lines of JavaScript on the live page, no build
step), small enough to read on a phone:

- `/p/{beneficiary}`: one participant's claims, points, what they can redeem, and why their
  other orders earned nothing. Behind a private link (`?key=` an HMAC of the id with the page
  secret, so no one can work out another participant's link) or a token.
- `/winners`: every region's slots and who holds them (masked ids), searchable, paginated;
  public when the daemon serves winners publicly, else behind a token.
- `/live`: the campaign as it runs, for operators (token): orders/s, outcomes over the last
  minutes, budget, regions sold out, top regions, dead letters, stream lag; it polls
  `/live/summary.json`.

A token (the bearer token or the read-only one) may come as `Authorization: Bearer`, as the
`rewardcore_token` cookie, or once as `?token=`, which sets the cookie and redirects to the
same page without it, so it does not stay in the address bar or the history.

The engines keep claims, not losing orders, so the "why nothing" list comes from the
decisions this daemon made since it started: the last `RECENT_PER_BENEFICIARY` non-winning
orders of each of the most recent `RECENT_BENEFICIARIES` beneficiaries (the page says so).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import msgspec
import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..campaign import Campaign
from ..engine import Decisions, Engine
from ..events import Event
from ..outcomes import LABELS, PLACED_OUTCOMES, Outcome
from ..winners import mask_id, winner_rows

if TYPE_CHECKING:
    from .app import DaemonContext

RECENT_PER_BENEFICIARY = 10
RECENT_BENEFICIARIES = 20_000
HISTORY_SECONDS = 15 * 60
PAGE_SIZE = 50
COOKIE = "rewardcore_token"
_json = msgspec.json.Encoder()

_LOSING = frozenset(int(o) for o in PLACED_OUTCOMES) - {int(Outcome.AWARDED),
                                                      int(Outcome.DUPLICATE)}
_N_OUTCOMES = len(Outcome)


# -- links ----------------------------------------------------------------------------------

def page_secret(token: str) -> bytes | None:
    """The key of participant links: $REWARDCORE_PAGE_SECRET, else one derived from the
    bearer token (so links stay valid across restarts with the same token)."""
    own = os.environ.get("REWARDCORE_PAGE_SECRET", "")
    if own:
        return own.encode()
    if not token:
        return None
    return hmac.new(token.encode(), b"rewardcore participant links", hashlib.sha256).digest()


def participant_key(secret: bytes, beneficiary: str) -> str:
    """The `key` of one participant's link: 128 bits of HMAC-SHA256 of the id."""
    return hmac.new(secret, beneficiary.encode(), hashlib.sha256).hexdigest()[:32]


# -- what the daemon remembers --------------------------------------------------------------

class LiveRecord:
    """Fed every applied batch (chained to the worker's `on_batch`): outcome counts per second for
    the last minutes, orders per region, and each beneficiary's recent non-winning orders
    (region, outcome, rank, time). Bounded: the history by time, the orders by the counts
    above."""

    def __init__(self, campaign: Campaign, clock: Callable[[], float] = time.time) -> None:
        self.campaign = campaign
        self.clock = clock
        self.seconds: deque[tuple[int, list[int]]] = deque()
        self.orders_by_region: Counter[int] = Counter()
        # oldest first; an OrderedDict drops its first key in O(1), where a dict, after many
        # deletions from its front, scans past them to find it
        self.recent: OrderedDict[str, list[Any]] = OrderedDict()

    def observe(self, events: Sequence[Event], decisions: Decisions) -> None:
        # On the daemon's hot path: numpy for the counts, Python only for the placed orders
        # (their regions) and the losing ones (the participants' "why nothing" list).
        now = int(self.clock())
        if not self.seconds or self.seconds[-1][0] != now:
            self.seconds.append((now, [0] * _N_OUTCOMES))
            while self.seconds and self.seconds[0][0] <= now - HISTORY_SECONDS:
                self.seconds.popleft()
        counts = self.seconds[-1][1]
        outcome = decisions.outcome
        for o, n in enumerate(np.bincount(outcome, minlength=_N_OUTCOMES).tolist()):
            counts[o] += n
        placed = np.flatnonzero((outcome < _N_PLACED) & (outcome != _DUPLICATE)).tolist()
        if not placed:
            return
        self.orders_by_region.update([events[i].region for i in placed])  # type: ignore[union-attr]
        losing = np.flatnonzero(np.isin(outcome, _LOSING_CODES)).tolist()
        if not losing:
            return
        rank_arr = getattr(decisions, "rank", None)  # DESIGN v2; absent on older engines
        ranks = rank_arr[losing] if rank_arr is not None else np.zeros(len(losing), np.int64)
        pays_merchant = self.campaign.pays_merchant
        recent = self.recent
        # The decoded event itself is kept (no new tuple per order), with outcome and rank
        # packed in one int: rank * 32 + outcome.
        for i, packed in zip(losing, (ranks.astype(np.int64) * 32
                                      + outcome[losing]).tolist(), strict=True):
            ev = events[i]
            who = ev.merchant_id if pays_merchant else ev.agent_id  # type: ignore[union-attr]
            rows = recent.get(who)
            if rows is None:
                if len(recent) >= RECENT_BENEFICIARIES:
                    recent.popitem(last=False)  # the longest-known beneficiary goes first
                rows = recent[who] = []
            elif len(rows) >= 4 * RECENT_PER_BENEFICIARY:
                del rows[:2 * RECENT_PER_BENEFICIARY]  # trimmed now and then, not per order
            rows.append(ev)
            rows.append(packed)

    def recent_of(self, who: str) -> list[tuple[str, int, int, int, int]]:
        """A beneficiary's last non-winning orders: (order_id, region, outcome, rank, ts)."""
        rows = self.recent.get(who, [])[-2 * RECENT_PER_BENEFICIARY:]
        out = []
        for ev, packed in zip(rows[::2], rows[1::2], strict=True):
            out.append((ev.order_id, ev.region, packed % 32, packed // 32, ev.ts))
        return out

    def window(self, seconds: int) -> list[int]:
        """Outcome counts over the last `seconds`."""
        since = int(self.clock()) - seconds
        total = [0] * _N_OUTCOMES
        for t, counts in self.seconds:
            if t > since:
                for o, n in enumerate(counts):
                    total[o] += n
        return total

    def minutes(self, n: int = 15) -> list[tuple[int, list[int]]]:
        """(minute start, outcome counts) for the last `n` minutes, oldest first."""
        now = int(self.clock())
        start = now - now % 60 - (n - 1) * 60
        out = [(start + 60 * k, [0] * _N_OUTCOMES) for k in range(n)]
        for t, counts in self.seconds:
            k = (t - start) // 60
            if 0 <= k < n:
                row = out[k][1]
                for o, c in enumerate(counts):
                    row[o] += c
        return out


_N_PLACED = len(PLACED_OUTCOMES)
_DUPLICATE = int(Outcome.DUPLICATE)
_LOSING_CODES = np.array(sorted(_LOSING), dtype=np.uint8)


# -- formatting -----------------------------------------------------------------------------

def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 11th, 1,043rd."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"


def _tz(campaign: Campaign) -> timezone:
    offset = campaign.info.starts_at.utcoffset()
    return timezone(offset if offset is not None else timedelta(0))


def when(campaign: Campaign, ms: int) -> str:
    """An epoch-ms time on the campaign's clock: "11-11 00:00:41"."""
    if not ms:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, _tz(campaign)).strftime("%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # an event's ts may be any int64
        return f"{ms} ms"


def why_nothing(campaign: Campaign, region: int, outcome: int, rank: int) -> str:
    """Why an order earned nothing, in a sentence for the participant who placed it."""
    r = campaign.region_by_code.get(region)
    slots = r.slots if r is not None else 0
    info = campaign.info
    o = Outcome(outcome)
    at = f"your order was the {ordinal(rank)} into region {region}" if rank else \
        f"your order went into region {region}"
    if o is Outcome.SOLD_OUT:
        if rank:
            return f"{at}; it pays its first {slots:,}, and those slots were taken"
        return f"region {region} had given all its {slots:,} slots when your order arrived"
    if o is Outcome.BUDGET_EXHAUSTED:
        return (f"{at}, within its first {slots:,}, but the campaign's budget of "
                f"{info.budget_points:,} points was spent")
    if o is Outcome.BENEFICIARY_CAP:
        return (f"you already held {info.max_claims_per_beneficiary:,} claims, the most one "
                "participant may hold")
    if o is Outcome.BENEFICIARY_REGION_CAP:
        return (f"you already held {info.max_claims_per_beneficiary_per_region:,} claim(s) in "
                f"region {region}, the most allowed in one region")
    if o is Outcome.BELOW_MIN_PAID:
        return f"it paid less than the minimum of {info.min_paid_cents / 100:,.2f} yuan"
    if o is Outcome.OUTSIDE_WINDOW:
        return (f"it was placed outside the campaign's window "
                f"({when(campaign, campaign.starts_ms)} to {when(campaign, campaign.ends_ms)})")
    if o is Outcome.NO_REWARD_REGION:
        return f"region {region} carries no reward in this campaign"
    if o is Outcome.CLOSED:
        return "the order was closed before it reached the campaign"
    return o.label


def _e(v: Any) -> str:
    return html.escape(str(v))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
           body_id: str = "", optional: Sequence[int] = ()) -> str:
    """A table in a box that scrolls sideways if it must (the page itself never does);
    `optional` columns are left out on a phone."""
    def cls(i: int) -> str:
        names = [n for n, on in (("n", i in numeric), ("opt", i in optional)) if on]
        return f' class="{" ".join(names)}"' if names else ""

    th = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head))
    tr = "".join("<tr>" + "".join(
        f"<td{cls(i)}>"
        f"{_e(f'{v:,}' if isinstance(v, int) and not isinstance(v, bool) else v)}</td>"
        for i, v in enumerate(row)) + "</tr>" for row in rows)
    tbody = f'<tbody id="{body_id}">' if body_id else "<tbody>"
    return (f'<div class="scroll"><table><thead><tr>{th}</tr></thead>{tbody}{tr}</tbody>'
            "</table></div>")


def _cards(items: Sequence[tuple[str, str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><span class="muted">{_e(label)}</span><b id="{_e(i)}">{_e(v)}</b>'
        "</div>" for i, label, v in items) + "</div>"


_TEMPLATE = Template(resources.files(__package__).joinpath("templates/page.html").read_text())
_LIVE_JS = resources.files(__package__).joinpath("templates/live.js").read_text()


def _page(title: str, body: str, campaign: Campaign, *, script: str = "",
          status: int = 200, attrs: str = "") -> HTMLResponse:
    text = _TEMPLATE.substitute(
        title=_e(title), body=body, script=script,
        footer=_e(f"rewardcore · campaign {campaign.id} · times on the campaign's clock "
                  f"(UTC{_offset(campaign)})"))
    if attrs:
        text = text.replace("<body>", f"<body {attrs}>", 1)
    return HTMLResponse(text, status, headers={"cache-control": "no-store",
                                               "x-content-type-options": "nosniff",
                                               "referrer-policy": "no-referrer"})


def _offset(campaign: Campaign) -> str:
    s = int(_tz(campaign).utcoffset(None).total_seconds())
    sign = "+" if s >= 0 else "-"
    h, m = divmod(abs(s) // 60, 60)
    return f"{sign}{h:02d}:{m:02d}"


# -- the pages ------------------------------------------------------------------------------

class Pages:
    """The routes of the pages, sharing the daemon's context."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.campaign = ctx.campaign
        self.secret = page_secret(ctx.token)
        self.live = LiveRecord(ctx.campaign)
        # Chained after the worker's own callback (the metrics): one call per engine batch.
        before = ctx.worker.on_batch
        observe = self.live.observe

        def on_batch(events: Sequence[Event], decisions: Decisions, seconds: float) -> None:
            if before is not None:
                before(events, decisions, seconds)
            observe(events, decisions)

        ctx.worker.on_batch = on_batch
        self._summary_cache: tuple[float, dict[str, Any]] | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/p/{beneficiary}", self.participant, methods=["GET"]),
            Route("/winners", self.winners, methods=["GET"]),
            Route("/live", self.live_page, methods=["GET"]),
            Route("/live/summary.json", self.summary, methods=["GET"]),
        ]

    # -- access -----------------------------------------------------------------------------
    def _tokens(self) -> list[bytes]:
        read = self.ctx.read_token
        return [t.encode() for t in (self.ctx.token, read) if t]

    def _token_ok(self, token: str) -> bool:
        given = token.encode()
        return bool(given) and any(hmac.compare_digest(given, t) for t in self._tokens())

    def _request_token(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:]
        return request.cookies.get(COOKIE, "")

    def _with_token(self, request: Request) -> Response | None:
        """A redirect that moves a valid `?token=` into the cookie; None otherwise."""
        token = request.query_params.get("token")
        if token is None or not self._token_ok(token):
            return None
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        resp = RedirectResponse(target, 303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
        return resp

    def _authorized(self, request: Request) -> bool:
        return self._token_ok(self._request_token(request))

    def _refuse(self, what: str) -> HTMLResponse:
        body = (f"<h1>Not allowed</h1><p>{_e(what)}</p>"
                "<p class=muted>Operators: open the page once with <code>?token=...</code> "
                "(the daemon's bearer or read-only token); it is kept in a cookie.</p>")
        return _page("Not allowed", body, self.campaign, status=403)

    async def _engine(self, fn: Callable[..., Any], *args: Any) -> Any:
        from .worker import WorkerClosed

        try:
            return await self.ctx.worker.call(fn, *args)
        except WorkerClosed:
            return _page("Stopping", "<h1>The daemon is stopping</h1>", self.campaign,
                         status=503)

    # -- /p/{beneficiary} -------------------------------------------------------------------
    async def participant(self, request: Request) -> Response:
        redirect = self._with_token(request)
        if redirect is not None:
            return redirect
        who = request.path_params["beneficiary"]
        key = request.query_params.get("key", "")
        linked = bool(key) and self.secret is not None and hmac.compare_digest(
            key.encode(), participant_key(self.secret, who).encode())
        if not (linked or self._authorized(request)):
            return self._refuse("This link is not valid for this participant. Use the "
                                "personal link you were sent.")
        view = await self._engine(self._participant_view, self.ctx.engine, who)
        if isinstance(view, Response):
            return view
        return _page(f"{who} · {self.campaign.id}", view, self.campaign)

    def _participant_view(self, engine: Engine, who: str) -> str:
        c = self.campaign
        info = c.info
        balance = engine.balance(who)
        claims = engine.claims_of(who)
        stock = engine.stock()
        has_rank = any(getattr(x, "rank", 0) for x in claims)
        rows = [(str(x.region), x.slot, *([ordinal(x.rank)] if has_rank else []),  # type: ignore[attr-defined]
                 x.points, x.state, when(c, x.ts)) for x in claims]
        head = ["region", "slot", *(["rank"] if has_rank else []), "points", "state", "placed at"]
        available = balance.available
        prize_rows = []
        for p in c.prizes:
            left = stock.get(p.id, p.stock)
            if left <= 0:
                verdict = "out of stock"
            elif available >= p.cost_points:
                verdict = "you can redeem it now"
            else:
                need = p.cost_points - available
                verdict = f"{need:,} more confirmed points needed"
                if balance.pending and balance.pending >= need:
                    verdict += " (your pending points cover it once their orders complete)"
            prize_rows.append((p.name, p.cost_points, verdict))
        kind = "merchant" if c.pays_merchant else "agent"
        parts = [
            f"<h1>{_e(who)}</h1>",
            f"<p>Your points in campaign <b>{_e(c.id)}</b> ({kind} rewards).</p>",
            _cards([("available", "available now", f"{available:,}"),
                    ("pending", "pending", f"{balance.pending:,}"),
                    ("confirmed", "confirmed", f"{balance.confirmed:,}"),
                    ("redeemed", "spent on prizes", f"{balance.redeemed:,}")]),
            '<p class="muted">Pending points become available when the order completes; a '
            "closed order takes its points back.</p>" if info.settle_on == "completed" else "",
            f"<h2>Your winning orders ({len(claims):,})</h2>",
            _table(head, rows, numeric=(1, len(head) - 3)) if rows
            else "<p>None of your orders has won a slot yet.</p>",
            "<h2>Prizes</h2>",
            _table(["prize", "cost", "for you"], prize_rows, numeric=(1,)) if prize_rows
            else "<p>This campaign has no prizes.</p>",
            "<h2>Orders that earned nothing</h2>",
        ]
        recent = self.live.recent_of(who)
        if recent:
            parts.append('<ul class="why">' + "".join(
                f"<li><b>{_e(oid)}</b> ({_e(when(c, ts))}): "
                f"{_e(why_nothing(c, region, o, rank))} <span class=muted>({_e(LABELS[o])})</span>"
                "</li>" for oid, region, o, rank, ts in reversed(recent)) + "</ul>")
        else:
            parts.append("<p>None seen.</p>")
        parts.append(f'<p class="muted">This list holds your last {RECENT_PER_BENEFICIARY} orders '
                     "that earned nothing, as this server decided them since it started; "
                     "winning orders are kept for good.</p>")
        return "".join(parts)

    # -- /winners ---------------------------------------------------------------------------
    async def winners(self, request: Request) -> Response:
        redirect = self._with_token(request)
        if redirect is not None:
            return redirect
        if not (self.ctx.public_winners or self._authorized(request)):
            return self._refuse("The winners of this campaign are not public yet.")
        q = request.query_params
        region_raw = q.get("region", "").strip()
        search = q.get("q", "").strip()
        try:
            page = max(1, int(q.get("page", "1") or 1))
        except ValueError:
            page = 1
        region: int | None = None
        note = ""
        if region_raw:
            try:
                region = int(region_raw)
            except ValueError:
                note = f"region {region_raw!r} is not a number"
            else:
                if region not in self.campaign.region_by_code:
                    note = f"{region} is not a reward region of this campaign"
                    region = None
        rows = await self._engine(winner_rows, self.ctx.engine, region)
        if isinstance(rows, Response):
            return rows
        if note:
            rows = []
        if search:
            masked = search if "*" in search else mask_id(search)
            rows = [r for r in rows if r["beneficiary"] == masked
                    or ("*" in search and search in r["beneficiary"])]
        return _page(f"Winners · {self.campaign.id}",
                     self._winners_html(rows, region, region_raw, search, page, note),
                     self.campaign)

    def _winners_html(self, rows: list[dict[str, Any]], region: int | None, region_raw: str,
                      search: str, page: int, note: str) -> str:
        pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
        page = min(page, pages)
        shown = rows[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
        has_rank = any(r.get("rank") for r in rows)
        head = ["region", "slot", "holder", *(["rank"] if has_rank else []), "order",
                "placed at", "points", "state"]
        body = [(str(r["region"]), r["slot"], r["beneficiary"],
                 *([ordinal(r["rank"]) if r.get("rank") else "-"] if has_rank else []),
                 r["order_id"], when(self.campaign, r["ts"]), r["points"], r["state"])
                for r in shown]
        regions = len({r["region"] for r in rows})
        parts = [
            f"<h1>Winners of {_e(self.campaign.id)}</h1>",
            "<p>Every slot won so far, by region and slot, with ids masked: your id keeps "
            "its first and last quarter. Type your own id to find your slots.</p>",
            '<form method="get" action="/winners" role="search">'
            f'<input name="region" inputmode="numeric" placeholder="region code" '
            f'value="{_e(region_raw)}" aria-label="region code">'
            f'<input name="q" placeholder="your id, or a masked id" value="{_e(search)}" '
            'aria-label="id"><button>Search</button></form>',
        ]
        if note:
            parts.append(f'<p class="no">{_e(note)}</p>')
        if region is not None:
            r = self.campaign.region_by_code[region]
            held = sum(1 for x in rows if x["region"] == region)
            parts.append(f'<p id="region-summary">Region {region}: {r.slots:,} slots, '
                         f"{held:,} held now.</p>")
        parts.append(f'<p id="count">{len(rows):,} slot(s) held in {regions:,} region(s)'
                     f"{'' if pages == 1 else f'; page {page} of {pages}'}.</p>")
        parts.append(_table(head, body, numeric=(1, len(head) - 2),
                            optional=(len(head) - 4, len(head) - 1)))
        if pages > 1:
            def link(p: int, text: str) -> str:
                query = {k: v for k, v in (("region", region_raw), ("q", search)) if v}
                query["page"] = str(p)
                return f'<a href="/winners?{urlencode(query)}">{text}</a>'
            parts.append('<nav class="pages">'
                         + (link(page - 1, "&larr; previous") if page > 1 else "")
                         + (link(page + 1, "next &rarr;") if page < pages else "") + "</nav>")
        return "".join(parts)

    # -- /live ------------------------------------------------------------------------------
    async def live_page(self, request: Request) -> Response:
        redirect = self._with_token(request)
        if redirect is not None:
            return redirect
        if not self._authorized(request):
            return self._refuse("The live page is for the campaign's operators.")
        c = self.campaign
        body = (
            f"<h1>Live: {_e(c.id)}</h1>"
            + _cards([("rate", "orders/s (last 10 s)", "-"), ("events", "events applied", "-"),
                      ("budget", "points held", "-"), ("sold-out", "regions sold out", "-"),
                      ("dead", "dead letters", "-"), ("lag", "stream lag", "-")])
            + "<h2>Outcomes of the last minute</h2><div id=mix class=bar></div>"
            + "<h2>Last 10 minutes</h2>"
            + _table(["minute", "placed", "awarded", "sold out", "budget", "other"], [],
                     numeric=(1, 2, 3, 4, 5), body_id="minutes")
            + "<h2>Outcomes since the daemon started</h2>"
            + _table(["outcome", "events"], [], numeric=(1,), body_id="outcomes")
            + "<h2>Top regions</h2>"
            + _table(["region", "orders", "slots left", ""], [], numeric=(1, 2),
                     body_id="regions")
            + "<h2>Recent dead letters</h2>"
            + _table(["where", "reason"], [], body_id="dead-recent")
            + '<p class="muted">updated <span id="updated">-</span></p>'
        )
        return _page(f"Live · {c.id}", body, c, script=f"<script>{_LIVE_JS}</script>",
                     attrs='data-summary="/live/summary.json" data-every="2000"')

    async def summary(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(_json.encode({"error": "a token is needed"}), 401,
                            media_type="application/json")
        cached = self._summary_cache
        now = time.monotonic()
        if cached is None or now - cached[0] > 1.0:  # claims are read at most once a second
            view = await self._engine(self._engine_summary, self.ctx.engine)
            if isinstance(view, Response):
                return view
            self._summary_cache = cached = (now, view)
        live = self.live
        last10 = live.window(10)
        placed10 = sum(last10[int(o)] for o in PLACED_OUTCOMES)
        minute = live.window(60)
        held = cached[1]
        top = sorted(live.orders_by_region.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        slots = {r.code: r.slots for r in self.campaign.regions}
        body = {
            "campaign": self.campaign.id,
            "now_ms": int(time.time() * 1000),
            "events": self.ctx.worker.events_applied,
            "orders_per_s": placed10 / 10,
            "outcomes": {LABELS[o]: n for o, n in enumerate(self.ctx.metrics.outcomes) if n},
            "recent_outcomes": {LABELS[o]: n for o, n in enumerate(minute)
                                if n and o < _N_PLACED},
            "minutes": [self._minute_row(t, counts) for t, counts in live.minutes()],
            "budget": {"points": held["points"], "budget": self.campaign.info.budget_points},
            "regions": len(self.campaign.regions),
            "regions_sold_out": len(held["sold_out"]),
            "top_regions": [{"code": code, "orders": n, "slots": slots.get(code, 0),
                             "left": held["left"].get(code, 0),
                             "sold_out": code in held["sold_out"]} for code, n in top],
            "dead_letters": {"total": self.ctx.dead.total,
                             "recent": [_dead_row(d) for d in list(self.ctx.dead.recent)[-5:]]},
            "stream_lag": _stream_lag(self.ctx),
        }
        return Response(_json.encode(body), media_type="application/json",
                        headers={"cache-control": "no-store"})

    def _minute_row(self, t: int, counts: list[int]) -> dict[str, Any]:
        placed = sum(counts[int(o)] for o in PLACED_OUTCOMES)
        main = (counts[Outcome.AWARDED], counts[Outcome.SOLD_OUT],
                counts[Outcome.BUDGET_EXHAUSTED])
        at = datetime.fromtimestamp(t, _tz(self.campaign)).strftime("%H:%M")
        return {"at": at, "placed": placed, "awarded": main[0], "sold_out": main[1],
                "budget_exhausted": main[2], "other": placed - sum(main)}

    def _engine_summary(self, engine: Engine) -> dict[str, Any]:
        """Budget used and slots left per region, from the engine's own summary (counters on
        the engines that keep them, one read of the claims on the others)."""
        summary = engine.summary()
        left = {r.code: n for r, n in zip(self.campaign.regions, summary.slots_left,
                                          strict=True)}
        used = summary.budget_used
        if used is None:
            used = sum(c.points for c in engine.claims() if c.state != "revoked")
        return {"left": left, "points": used,
                "sold_out": {code for code, n in left.items() if n <= 0}}




def _dead_row(d: dict[str, Any]) -> dict[str, str]:
    where = d.get("source", "")
    for key in ("line", "index"):
        if d.get(key) is not None:
            where += f" {key} {d[key]}"
    return {"where": where.strip(), "reason": str(d.get("reason", ""))[:200]}


def _stream_lag(ctx: DaemonContext) -> int | None:
    """The source stream's lag from the daemon's gauge; None when there is no stream."""
    total = None
    for metric in ctx.metrics.stream_lag.collect():
        for sample in metric.samples:
            total = (total or 0) + int(sample.value)
    return total


def participant_path(secret: bytes, beneficiary: str) -> str:
    """`/p/ID?key=...`: the path of one participant's page."""
    return f"/p/{quote(beneficiary, safe='')}?key={participant_key(secret, beneficiary)}"
