# cython: language_level=3
"""The compiled in-process claim engine: the rules of ext/rc_rules.pxi over growable arrays.

A batch is applied in two passes (ext/rc_read.pxi, then rc_apply of ext/rc_rules.pxi): the
first reads and checks each event into a C record, so a malformed event raises before any
state changes; the second applies the records in order and touches only C arrays. This file
keeps the storage: numpy arrays (so state can be snapshotted) that grow when full, order ids
and beneficiary names in Python lists, redemptions in a dict.

State layout:
  orders       rc_fpslot[cap]: order fingerprint -> ORDER_* or c+1 for claim c
  regions      per row: used, taken, ranked, released-slot heap
  beneficiaries fingerprint -> index (names kept for export); per index: fingerprint, held
               claims, pending, confirmed, redeemed points
  pairs        (beneficiary, row) -> held claims + 1, only when the per-region cap is set
  claims       per claim: row, slot, points, beneficiary, state, ts, rank, settled_ts,
               revoked_ts; order ids in a list
"""

from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cimport numpy as cnp
import numpy as np

cnp.import_array()

from rc_common cimport *  # ext/rc_common.pxd: hash tables, int reads, outcome codes, records

include "rc_read.pxi"   # pass one: reading and checking event fields
include "rc_rules.pxi"  # the rules



cdef inline uint64_t _pow2_at_least(uint64_t n) noexcept:
    cdef uint64_t c = 16
    while c < n:
        c <<= 1
    return c


def _grown(cnp.ndarray a, Py_ssize_t n):
    """A copy of `a` with room for n rows (zero-filled past the old end)."""
    b = np.zeros((n,) + (<object> a).shape[1:], dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


# The arrays of the state, by attribute name (a_<name>): what snapshots hold.
_REGION_ARRAYS = ("used", "taken", "heap_len", "ranked")
_BENE_ARRAYS = ("bfp", "held", "pending", "confirmed", "redeemed")
_CLAIM_ARRAYS = ("c_row", "c_slot", "c_points", "c_bene", "c_state", "c_ts", "c_rank",
                 "c_settled", "c_revoked")
_DTYPES = {"used": np.int32, "taken": np.int32, "heap_len": np.int32, "ranked": np.int64,
           "bfp": np.uint64, "held": np.int32, "pending": np.int64, "confirmed": np.int64,
           "redeemed": np.int64, "c_row": np.int32, "c_slot": np.int32, "c_points": np.int32,
           "c_bene": np.int32, "c_state": np.uint8, "c_ts": np.int64, "c_rank": np.int64,
           "c_settled": np.int64, "c_revoked": np.int64}


ctypedef struct _Counts:
    int64_t n_orders, n_bene, n_pairs, n_claims, awarded_points
    int64_t outcomes[N_OUTCOMES]


cdef class MemoryCore(RulesStorage):
    """Claim state of one campaign in typed arrays; see the module docstring for the layout."""

    cdef _Counts cnt
    # public: set and read by name (snapshots, growth)
    cdef public cnp.ndarray a_used, a_taken, a_heap_len, a_ranked, a_heap
    cdef public cnp.ndarray a_orders, a_btab, a_pairs
    cdef public cnp.ndarray a_bfp, a_held, a_pending, a_confirmed, a_redeemed
    cdef public cnp.ndarray a_c_row, a_c_slot, a_c_points, a_c_bene, a_c_state, a_c_ts
    cdef public cnp.ndarray a_c_rank, a_c_settled, a_c_revoked
    cdef public cnp.ndarray a_stock
    cdef list names
    cdef list claim_orders
    cdef dict redemption_log
    cdef object prepared

    def __init__(self, campaign, Py_ssize_t expected_orders=0):
        # Only caps need the beneficiary before slot choice: otherwise it is hashed when
        # awarded, which most orders of a peak day are not.
        caps = bool(campaign.info.max_claims_per_beneficiary
                    or campaign.info.max_claims_per_beneficiary_per_region)
        self.bind_campaign(campaign, True, caps)
        self.s.n_orders = &self.cnt.n_orders
        self.s.n_bene = &self.cnt.n_bene
        self.s.n_pairs = &self.cnt.n_pairs
        self.s.n_claims = &self.cnt.n_claims
        self.s.awarded_points = &self.cnt.awarded_points
        self.s.outcomes = self.cnt.outcomes
        self.reset(expected_orders)

    def reset(self, Py_ssize_t expected_orders=0):
        """Forget every order, claim and redemption."""
        n = self.n_regions
        for name in _REGION_ARRAYS:
            setattr(self, "a_" + name, np.zeros(n, _DTYPES[name]))
        self.a_heap = np.zeros(max(self.tables.heap_total, 1), np.int32)
        self.a_orders = np.zeros((_pow2_at_least(expected_orders * 4 // 3 + 1), 2), np.uint64)
        self.a_btab = np.zeros((1024, 2), np.uint64)
        for name in _BENE_ARRAYS:
            setattr(self, "a_" + name, np.zeros(256, _DTYPES[name]))
        self.a_pairs = np.zeros((1024, 2), np.uint64)
        for name in _CLAIM_ARRAYS:
            setattr(self, "a_" + name, np.zeros(1024, _DTYPES[name]))
        self.names = []
        self.claim_orders = []
        self.cnt.n_orders = self.cnt.n_bene = self.cnt.n_pairs = self.cnt.n_claims = 0
        self.cnt.awarded_points = 0
        cdef int k
        for k in range(N_OUTCOMES):
            self.cnt.outcomes[k] = 0
        self.a_stock = np.array([p.stock for p in self.campaign.prizes] or [0], np.int64)
        self.redemption_log = {}
        self._bind_state()

    cdef void _bind_state(self) noexcept:
        cdef rc_core *s = &self.s
        s.used = <int32_t *> self.a_used.data
        s.taken = <int32_t *> self.a_taken.data
        s.heap_len = <int32_t *> self.a_heap_len.data
        s.ranked = <int64_t *> self.a_ranked.data
        s.heap = <int32_t *> self.a_heap.data
        s.orders = <rc_fpslot *> self.a_orders.data
        s.omask = self.a_orders.shape[0] - 1
        s.btab = <rc_fpslot *> self.a_btab.data
        s.bmask = self.a_btab.shape[0] - 1
        s.bfp = <uint64_t *> self.a_bfp.data
        s.held = <int32_t *> self.a_held.data
        s.pending = <int64_t *> self.a_pending.data
        s.confirmed = <int64_t *> self.a_confirmed.data
        s.redeemed = <int64_t *> self.a_redeemed.data
        s.pairs = <rc_fpslot *> self.a_pairs.data
        s.pmask = self.a_pairs.shape[0] - 1
        s.c_row = <int32_t *> self.a_c_row.data
        s.c_slot = <int32_t *> self.a_c_slot.data
        s.c_points = <int32_t *> self.a_c_points.data
        s.c_bene = <int32_t *> self.a_c_bene.data
        s.c_state = <uint8_t *> self.a_c_state.data
        s.c_ts = <int64_t *> self.a_c_ts.data
        s.c_rank = <int64_t *> self.a_c_rank.data
        s.c_settled = <int64_t *> self.a_c_settled.data
        s.c_revoked = <int64_t *> self.a_c_revoked.data
        s.stock = <int64_t *> self.a_stock.data

    # -- storage: growth and strings (rare, so plain Python is fine) -----------------------
    cdef int grow(self, int what) except -1:
        if what == GROW_ORDERS:
            self._grow_orders()
        else:
            self._grow_pairs()
        return 0

    def _grow_orders(self):
        old = self.a_orders
        self.a_orders = np.zeros((old.shape[0] * 2, 2), np.uint64)
        self._bind_state()
        rc_rehash_fp(<rc_fpslot *> (<cnp.ndarray> old).data, old.shape[0], self.s.orders,
                     self.s.omask)

    def _grow_pairs(self):
        old = self.a_pairs
        self.a_pairs = np.zeros((old.shape[0] * 2, 2), np.uint64)
        self._bind_state()
        rc_rehash_pairs(&self.s, <rc_fpslot *> (<cnp.ndarray> old).data, old.shape[0])

    cdef Py_ssize_t new_bene(self, rc_rec *r) except -1:
        cdef Py_ssize_t b = self.cnt.n_bene
        if b >= self.a_held.shape[0]:
            for name in _BENE_ARRAYS:
                setattr(self, "a_" + name, _grown(getattr(self, "a_" + name), 2 * b))
        if (b + 1) * 4 > self.a_btab.shape[0] * 3:
            old = self.a_btab
            self.a_btab = np.zeros((old.shape[0] * 2, 2), np.uint64)
            self._bind_state()
            rc_rehash_fp(<rc_fpslot *> (<cnp.ndarray> old).data, old.shape[0], self.s.btab,
                         self.s.bmask)
        self._bind_state()
        self.names.append(<object> r.who)
        return b

    cdef Py_ssize_t new_claim(self, rc_rec *r) except -1:
        cdef Py_ssize_t c = self.cnt.n_claims
        if c >= self.a_c_row.shape[0]:
            for name in _CLAIM_ARRAYS:
                setattr(self, "a_" + name, _grown(getattr(self, "a_" + name), 2 * c))
            self._bind_state()
        self.claim_orders.append(<object> r.order)
        return c

    cdef int redeem(self, rc_rec *r, int32_t *out_points) except -1:
        rid = <object> r.order
        prior = self.redemption_log.get(rid)
        if prior is None:
            k = self.prize_index.get(<object> r.prize, -1)
            b = rc_find_name(&self.s, <object> r.who)
            prior = self.redemption_log[rid] = self._redeem_first(b, k, r.qty)
        out_points[0] = prior[1]
        return prior[0]

    cdef tuple _redeem_first(self, Py_ssize_t b, Py_ssize_t k, int64_t qty):
        cdef int64_t cost
        cdef int o = rc_redeem_rule(&self.s, b, k, qty, &cost)
        return (o, cost)

    # -- the batch ---------------------------------------------------------------------------
    def apply(self, list events):
        """Apply a batch of decoded events in order; returns (outcome, slot, points, rank)."""
        self.prepare(events)
        return self.commit()

    def prepare(self, list events):
        """Pass one alone: read and check the batch (EventError before any change); `commit`
        then applies it. Lets a caller log a batch only once it is known to be valid."""
        self.prepared = None
        self.read_batch(events)
        self.prepared = events  # the records borrow the events: keep them alive

    def commit(self):
        """Pass two over the prepared batch; returns (outcome, slot, points, rank) arrays."""
        events = self.prepared
        if events is None:
            raise RuntimeError("MemoryCore.commit without a prepared batch")
        self.prepared = None
        return self.apply_records(len(events))

    # -- views -------------------------------------------------------------------------------
    @property
    def orders_remembered(self):
        return self.cnt.n_orders

    @property
    def order_table_bytes(self):
        """Bytes held by the order-id table (the per-order memory cost)."""
        return self.a_orders.nbytes

    def claim_rows(self):
        """(order_ids, region codes, slots, points, beneficiary names, state names, ts, rank,
        settled_ts, revoked_ts)."""
        n = self.cnt.n_claims
        return (
            self.claim_orders,
            self.tables.codes[self.a_c_row[:n]],
            self.a_c_slot[:n],
            self.a_c_points[:n],
            [self.names[b] for b in self.a_c_bene[:n]],
            [CLAIM_STATE_NAMES[s] for s in self.a_c_state[:n]],
            self.a_c_ts[:n],
            self.a_c_rank[:n],
            self.a_c_settled[:n],
            self.a_c_revoked[:n],
        )

    def balance_rows(self):
        """(names, pending, confirmed, redeemed) for every interned beneficiary."""
        n = self.cnt.n_bene
        return (self.names, self.a_pending[:n], self.a_confirmed[:n], self.a_redeemed[:n])

    def balance_of(self, str who):
        b = rc_find_name(&self.s, who)
        if b < 0:
            return (0, 0, 0)
        return (int(self.a_pending[b]), int(self.a_confirmed[b]), int(self.a_redeemed[b]))

    def outcome_count_array(self):
        return np.array([self.cnt.outcomes[k] for k in range(N_OUTCOMES)], np.int64)

    def redemption_items(self):
        return {rid: o for rid, (o, _) in self.redemption_log.items()}

    def stock_array(self):
        return self.a_stock.copy()

    def region_counts(self, int64_t code):
        """(slots, taken, remaining) of a region, or None when it is not a reward region."""
        row = rc_region_row(&self.s, code)
        if row < 0:
            return None
        slots = self.tables.slots[row]
        free = slots - self.a_used[row] + self.a_heap_len[row]
        return (int(slots), int(self.a_taken[row]), int(free))

    @property
    def awarded_points_total(self):
        return self.cnt.awarded_points

    # -- snapshots (durable mode) ------------------------------------------------------------
    _ARRAYS = _REGION_ARRAYS + ("heap", "orders", "btab", "pairs", "stock") + _BENE_ARRAYS \
        + _CLAIM_ARRAYS

    def snapshot(self):
        """The whole mutable state as (numpy arrays, plain Python values); `restore` takes it."""
        arrays = {name: getattr(self, "a_" + name).copy() for name in self._ARRAYS}
        arrays["outcomes"] = self.outcome_count_array()
        scalars = {
            "campaign_id": self.campaign.id, "layout": 2,
            "n_orders": self.cnt.n_orders, "n_bene": self.cnt.n_bene,
            "n_pairs": self.cnt.n_pairs, "n_claims": self.cnt.n_claims,
            "awarded_points": self.cnt.awarded_points,
            "names": list(self.names), "claim_orders": list(self.claim_orders),
            "redemptions": {k: list(v) for k, v in self.redemption_log.items()},
        }
        return arrays, scalars

    def restore(self, dict arrays, dict scalars):
        if scalars["campaign_id"] != self.campaign.id:
            raise ValueError(f"snapshot is of campaign {scalars['campaign_id']!r}, "
                             f"not {self.campaign.id!r}")
        if scalars.get("layout") != 2:
            raise ValueError("snapshot is of an older layout (no ranks or claim timestamps); "
                             "replay the events into a fresh directory")
        for name in self._ARRAYS:
            setattr(self, "a_" + name, np.ascontiguousarray(arrays[name]))
        cdef int k
        counts = arrays["outcomes"]
        for k in range(N_OUTCOMES):
            self.cnt.outcomes[k] = counts[k]
        self.cnt.n_orders = scalars["n_orders"]
        self.cnt.n_bene = scalars["n_bene"]
        self.cnt.n_pairs = scalars["n_pairs"]
        self.cnt.n_claims = scalars["n_claims"]
        self.cnt.awarded_points = scalars["awarded_points"]
        self.names = list(scalars["names"])
        self.claim_orders = list(scalars["claim_orders"])
        self.redemption_log = {rid: tuple(v) for rid, v in scalars["redemptions"].items()}
        self._bind_state()
