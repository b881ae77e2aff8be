# cython: language_level=3
"""The compiled claim engine: DESIGN.md's rules over typed arrays.

A batch is applied in two passes. The first reads each event's fields straight from the
msgspec Struct (by member offset, no attribute lookup) into a C record and hashes the order
id; it validates everything, so a malformed event raises before any state changes. The
second pass applies the records in order and touches only C arrays.

State layout (all numpy arrays, so it can be snapshotted):
  orders       rc_fpslot[cap]: order fingerprint -> -1 placed, -2 tombstone, c+1 claim c
  regions      code -> row (rc_int table); per row: slots, used, taken, released-slot heap
  beneficiaries fingerprint -> index (the name kept for export); per index: held
               claims, pending, confirmed, redeemed points
  pairs        (beneficiary, row) -> held claims + 1, only when the per-region cap is set;
               the bucket is a hash of (beneficiary fingerprint, row) so pass one can
               compute it and pass two can prefetch it; the key is exact
  claims       per claim: row, slot, points, beneficiary, state, ts; order ids in a list
"""

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cimport numpy as cnp
import numpy as np

cnp.import_array()

from rc_common cimport *  # ext/rc_common.pxd: hash tables, int reads, outcome codes

include "rc_read.pxi"  # pass one: reading and checking event fields

from rewardcore.outcomes import Outcome

include "rc_outcome_codes.pxi"  # OUTCOME_CODES, generated from rewardcore.outcomes

DEF PREFETCH_AHEAD = 12

# Order table values.
cdef enum:
    ORDER_PLACED = -1
    ORDER_TOMBSTONE = -2

# Claim states, as exported.
cdef enum:
    PENDING = 0
    CONFIRMED_STATE = 1
    REVOKED_STATE = 2
CLAIM_STATE_NAMES = ("pending", "confirmed", "revoked")

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


cdef class MemoryCore:
    """Claim state of one campaign in typed arrays; see the module docstring for the layout."""

    # campaign settings
    cdef int64_t starts, ends, min_paid, budget, cap, region_cap
    cdef bint releases, settle_placed, pays_merchant
    cdef Py_ssize_t n_regions
    # campaign tables
    cdef object campaign
    cdef cnp.ndarray a_rkeys, a_rvals, a_codes, a_slots, a_tier_off, a_tier_upto, a_tier_points
    cdef int64_t *rkeys
    cdef int32_t *rvals
    cdef uint64_t rmask
    cdef int64_t *codes
    cdef int32_t *slots
    cdef int32_t *tier_off
    cdef int32_t *tier_upto
    cdef int32_t *tier_points
    # per region
    cdef public cnp.ndarray a_used, a_taken, a_heap_off, a_heap_len, a_heap
    cdef int32_t *used
    cdef int32_t *taken
    cdef int64_t *heap_off
    cdef int32_t *heap_len
    cdef int32_t *heap
    # orders
    cdef public cnp.ndarray a_orders
    cdef rc_fpslot *orders
    cdef uint64_t omask
    cdef Py_ssize_t n_orders
    # beneficiaries
    cdef public cnp.ndarray a_btab, a_held, a_pending, a_confirmed, a_redeemed
    cdef rc_fpslot *btab
    cdef uint64_t bmask
    cdef int32_t *held
    cdef int64_t *pending
    cdef int64_t *confirmed
    cdef int64_t *redeemed
    cdef Py_ssize_t n_bene
    cdef list names
    # (beneficiary, region) -> held + 1
    cdef public cnp.ndarray a_pairs
    cdef rc_fpslot *pairs
    cdef uint64_t pmask
    cdef Py_ssize_t n_pairs
    # claims
    cdef public cnp.ndarray a_c_row, a_c_slot, a_c_points, a_c_bene, a_c_state, a_c_ts
    cdef int32_t *c_row
    cdef int32_t *c_slot
    cdef int32_t *c_points
    cdef int32_t *c_bene
    cdef uint8_t *c_state
    cdef int64_t *c_ts
    cdef Py_ssize_t n_claims
    cdef list claim_orders
    # totals
    cdef int64_t awarded_points
    cdef int64_t outcome_counts[N_OUTCOMES]
    # prizes and redemptions (rare: plain Python)
    cdef dict prize_index
    cdef public cnp.ndarray a_stock
    cdef dict redemption_log
    # first-pass scratch
    cdef cnp.ndarray a_recs
    cdef rc_rec *recs
    cdef object prepared

    def __init__(self, campaign, Py_ssize_t expected_orders=0):
        self.campaign = campaign
        info = campaign.info
        self.starts, self.ends = campaign.starts_ms, campaign.ends_ms
        self.min_paid = info.min_paid_cents
        self.budget = info.budget_points
        self.cap = info.max_claims_per_beneficiary
        self.region_cap = info.max_claims_per_beneficiary_per_region
        self.releases = campaign.releases
        self.settle_placed = campaign.settles_on_placed
        self.pays_merchant = campaign.pays_merchant
        self.n_regions = len(campaign.regions)

        self.a_codes = np.ascontiguousarray(campaign.region_codes, dtype=np.int64)
        self.a_slots = np.ascontiguousarray(campaign.region_slots, dtype=np.int32)
        self.a_tier_off = np.ascontiguousarray(campaign.tier_offsets, dtype=np.int32)
        self.a_tier_upto = np.ascontiguousarray(campaign.tier_upto, dtype=np.int32)
        self.a_tier_points = np.ascontiguousarray(campaign.tier_points, dtype=np.int32)
        cap = _pow2_at_least(4 * self.n_regions)
        self.a_rkeys = np.zeros(cap, np.int64)
        self.a_rvals = np.zeros(cap, np.int32)
        self.rmask = cap - 1
        self._bind_campaign()
        cdef Py_ssize_t row
        cdef uint64_t i
        for row in range(self.n_regions):
            i = rc_int_probe(self.rkeys, self.rvals, self.rmask, self.codes[row])
            self.rkeys[i] = self.codes[row]
            self.rvals[i] = row + 1

        self.prize_index = {p.id: k for k, p in enumerate(campaign.prizes)}
        self.a_recs = np.zeros(0, np.uint8)
        self.recs = NULL
        self.reset(expected_orders)

    cdef void _bind_campaign(self) noexcept:
        self.rkeys = <int64_t *> self.a_rkeys.data
        self.rvals = <int32_t *> self.a_rvals.data
        self.codes = <int64_t *> self.a_codes.data
        self.slots = <int32_t *> self.a_slots.data
        self.tier_off = <int32_t *> self.a_tier_off.data
        self.tier_upto = <int32_t *> self.a_tier_upto.data
        self.tier_points = <int32_t *> self.a_tier_points.data

    def reset(self, Py_ssize_t expected_orders=0):
        """Forget every order, claim and redemption."""
        n = self.n_regions
        self.a_used = np.zeros(n, np.int32)
        self.a_taken = np.zeros(n, np.int32)
        self.a_heap_len = np.zeros(n, np.int32)
        # A region's heap holds at most its slots; only "release" campaigns need one.
        heap_sizes = self.a_slots.astype(np.int64) if self.releases else np.zeros(n, np.int64)
        self.a_heap_off = np.zeros(n + 1, np.int64)
        np.cumsum(heap_sizes, out=self.a_heap_off[1:])
        self.a_heap = np.zeros(max(int(self.a_heap_off[n]), 1), np.int32)
        self.a_orders = np.zeros((_pow2_at_least(expected_orders * 4 // 3 + 1), 2), np.uint64)
        self.n_orders = 0
        self.a_btab = np.zeros((1024, 2), np.uint64)
        self.a_held = np.zeros(256, np.int32)
        self.a_pending = np.zeros(256, np.int64)
        self.a_confirmed = np.zeros(256, np.int64)
        self.a_redeemed = np.zeros(256, np.int64)
        self.n_bene = 0
        self.names = []
        self.a_pairs = np.zeros((1024, 2), np.uint64)
        self.n_pairs = 0
        self._new_claim_arrays(1024)
        self.n_claims = 0
        self.claim_orders = []
        self.awarded_points = 0
        cdef int k
        for k in range(N_OUTCOMES):
            self.outcome_counts[k] = 0
        self.a_stock = np.array([p.stock for p in self.campaign.prizes] or [0], np.int64)
        self.redemption_log = {}
        self._bind_state()

    def _new_claim_arrays(self, Py_ssize_t n):
        self.a_c_row = np.zeros(n, np.int32)
        self.a_c_slot = np.zeros(n, np.int32)
        self.a_c_points = np.zeros(n, np.int32)
        self.a_c_bene = np.zeros(n, np.int32)
        self.a_c_state = np.zeros(n, np.uint8)
        self.a_c_ts = np.zeros(n, np.int64)

    cdef void _bind_state(self) noexcept:
        self.used = <int32_t *> self.a_used.data
        self.taken = <int32_t *> self.a_taken.data
        self.heap_off = <int64_t *> self.a_heap_off.data
        self.heap_len = <int32_t *> self.a_heap_len.data
        self.heap = <int32_t *> self.a_heap.data
        self.orders = <rc_fpslot *> self.a_orders.data
        self.omask = self.a_orders.shape[0] - 1
        self.btab = <rc_fpslot *> self.a_btab.data
        self.bmask = self.a_btab.shape[0] - 1
        self.held = <int32_t *> self.a_held.data
        self.pending = <int64_t *> self.a_pending.data
        self.confirmed = <int64_t *> self.a_confirmed.data
        self.redeemed = <int64_t *> self.a_redeemed.data
        self.pairs = <rc_fpslot *> self.a_pairs.data
        self.pmask = self.a_pairs.shape[0] - 1
        self.c_row = <int32_t *> self.a_c_row.data
        self.c_slot = <int32_t *> self.a_c_slot.data
        self.c_points = <int32_t *> self.a_c_points.data
        self.c_bene = <int32_t *> self.a_c_bene.data
        self.c_state = <uint8_t *> self.a_c_state.data
        self.c_ts = <int64_t *> self.a_c_ts.data

    # -- growth (rare, so plain Python is fine) --------------------------------------------
    def _grow_orders(self):
        old = self.a_orders
        cap = old.shape[0] * 2
        self.a_orders = np.zeros((cap, 2), np.uint64)
        self._bind_state()
        cdef rc_fpslot *src = <rc_fpslot *> (<cnp.ndarray> old).data
        cdef Py_ssize_t i
        cdef uint64_t j
        for i in range(old.shape[0]):
            if src[i].val != 0:
                j = rc_fp_probe(self.orders, self.omask, src[i].fp, src[i].fp2)
                self.orders[j] = src[i]

    def _grow_beneficiaries(self):
        n = self.a_held.shape[0] * 2
        self.a_held = _grown(self.a_held, n)
        self.a_pending = _grown(self.a_pending, n)
        self.a_confirmed = _grown(self.a_confirmed, n)
        self.a_redeemed = _grown(self.a_redeemed, n)
        if self.n_bene * 4 >= self.a_btab.shape[0] * 3 - 4:
            old = self.a_btab
            self.a_btab = np.zeros((old.shape[0] * 2, 2), np.uint64)
            self._bind_state()
            self._rehash_fp(old, self.btab, self.bmask)
        self._bind_state()

    cdef void _rehash_fp(self, cnp.ndarray old, rc_fpslot *dst, uint64_t mask) noexcept:
        cdef rc_fpslot *src = <rc_fpslot *> old.data
        cdef Py_ssize_t i
        for i in range(old.shape[0]):
            if src[i].val != 0:
                dst[rc_fp_probe(dst, mask, src[i].fp, src[i].fp2)] = src[i]

    def _grow_pairs(self):
        old = self.a_pairs
        self.a_pairs = np.zeros((old.shape[0] * 2, 2), np.uint64)
        self._bind_state()
        cdef rc_fpslot *src = <rc_fpslot *> (<cnp.ndarray> old).data
        cdef Py_ssize_t i
        for i in range(old.shape[0]):
            if src[i].val != 0:
                h = self._pair_hash_of(src[i].fp >> 32, src[i].fp & 0xFFFFFFFF)
                self.pairs[rc_keyed_probe(self.pairs, self.pmask, h, src[i].fp)] = src[i]

    cdef uint64_t _pair_hash_of(self, Py_ssize_t b, Py_ssize_t row):
        """The pair bucket hash from an interned beneficiary (off the hot path)."""
        cdef uint64_t fp
        cdef uint32_t fp2
        rc_hash_str(<PyObject *> self.names[b], &fp, &fp2)
        return rc_pair_hash(fp, row)

    def _grow_claims(self):
        n = self.a_c_row.shape[0] * 2
        self.a_c_row = _grown(self.a_c_row, n)
        self.a_c_slot = _grown(self.a_c_slot, n)
        self.a_c_points = _grown(self.a_c_points, n)
        self.a_c_bene = _grown(self.a_c_bene, n)
        self.a_c_state = _grown(self.a_c_state, n)
        self.a_c_ts = _grown(self.a_c_ts, n)
        self._bind_state()

    # -- small pieces of the hot path --------------------------------------------------------
    cdef inline Py_ssize_t _region_row(self, int64_t code) noexcept:
        cdef uint64_t i = rc_int_probe(self.rkeys, self.rvals, self.rmask, code)
        return self.rvals[i] - 1

    cdef inline int32_t _points_for(self, Py_ssize_t row, int32_t slot) noexcept:
        cdef int32_t t
        for t in range(self.tier_off[row], self.tier_off[row + 1]):
            if slot <= self.tier_upto[t]:
                return self.tier_points[t]
        return 0  # unreachable: the campaign's last tier covers every slot

    cdef inline Py_ssize_t _bene_find(self, uint64_t fp, uint32_t fp2) noexcept:
        """Index of a beneficiary by fingerprint, or -1."""
        cdef uint64_t i = rc_fp_probe(self.btab, self.bmask, fp, fp2)
        return self.btab[i].val - 1

    cdef Py_ssize_t _bene_intern(self, PyObject *who, uint64_t fp, uint32_t fp2) except -1:
        cdef Py_ssize_t b = self._bene_find(fp, fp2)
        if b >= 0:
            return b
        if self.n_bene >= self.a_held.shape[0] or self.n_bene * 4 >= self.a_btab.shape[0] * 3 - 4:
            self._grow_beneficiaries()
        cdef uint64_t i = rc_fp_probe(self.btab, self.bmask, fp, fp2)
        b = self.n_bene
        self.btab[i].fp = fp
        self.btab[i].fp2 = fp2
        self.btab[i].val = <int32_t> (b + 1)
        self.names.append(<object> who)
        self.n_bene += 1
        return b

    cdef inline uint64_t _pair_slot(self, Py_ssize_t b, Py_ssize_t row, uint64_t h) noexcept:
        return rc_keyed_probe(self.pairs, self.pmask, h, ((<uint64_t> b) << 32) | <uint64_t> row)

    cdef void _heap_push(self, Py_ssize_t row, int32_t slot) noexcept:
        cdef int32_t *h = self.heap + self.heap_off[row]
        cdef int32_t i = self.heap_len[row]
        cdef int32_t parent
        self.heap_len[row] = i + 1
        while i > 0:
            parent = (i - 1) >> 1
            if h[parent] <= slot:
                break
            h[i] = h[parent]
            i = parent
        h[i] = slot

    cdef void _heap_pop(self, Py_ssize_t row) noexcept:
        cdef int32_t *h = self.heap + self.heap_off[row]
        cdef int32_t n = self.heap_len[row] - 1
        cdef int32_t last = h[n]
        cdef int32_t i = 0
        cdef int32_t child
        self.heap_len[row] = n
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and h[child + 1] < h[child]:
                child += 1
            if h[child] >= last:
                break
            h[i] = h[child]
            i = child
        if n > 0:
            h[i] = last

    # -- the batch ---------------------------------------------------------------------------
    cdef int _read_batch(self, list events, Py_ssize_t n) except -1:
        """Pass one: fields into C records, checked, order ids hashed. Raises before any
        change (EventError naming the event and field, worded by rewardcore.events)."""
        cdef Py_ssize_t i
        cdef rc_rec *r
        cdef bint caps = self.cap or self.region_cap
        if self.a_recs.shape[0] < n * <Py_ssize_t> sizeof(rc_rec):
            self.a_recs = np.zeros(max(n, 1024) * sizeof(rc_rec), np.uint8)
            self.recs = <rc_rec *> self.a_recs.data
        for i in range(n):
            r = &self.recs[i]
            if not rc_read(<PyObject *> events[i], r, self.pays_merchant):
                rc_refuse(events, i)
            if r.kind == K_PLACED:
                if caps:
                    rc_hash_str(r.who, &r.wfp, &r.wfp2)
                r.row = self._region_row(r.region)
                if self.region_cap and r.row >= 0:
                    r.pair_hash = rc_pair_hash(r.wfp, r.row)
        return 0

    def apply(self, list events):
        """Apply a batch of decoded events in order; returns (outcome, slot, points) arrays."""
        self.prepare(events)
        return self.commit()

    def prepare(self, list events):
        """Pass one alone: read and check the batch (EventError before any change); `commit`
        then applies it. Lets a caller log a batch only once it is known to be valid."""
        self.prepared = None
        self._read_batch(events, len(events))
        self.prepared = events  # the records borrow the events: keep them alive

    def commit(self):
        """Pass two over the prepared batch; returns (outcome, slot, points) arrays."""
        events = self.prepared
        if events is None:
            raise RuntimeError("MemoryCore.commit without a prepared batch")
        self.prepared = None
        cdef Py_ssize_t n = len(events)
        outcome_arr = np.empty(n, np.uint8)
        slot_arr = np.zeros(n, np.int32)
        points_arr = np.zeros(n, np.int32)
        cdef uint8_t *out = <uint8_t *> (<cnp.ndarray> outcome_arr).data
        cdef int32_t *out_slot = <int32_t *> (<cnp.ndarray> slot_arr).data
        cdef int32_t *out_points = <int32_t *> (<cnp.ndarray> points_arr).data
        cdef Py_ssize_t i
        cdef rc_rec *r
        cdef rc_rec *ahead
        cdef int o
        cdef bint caps = self.cap or self.region_cap
        for i in range(n):
            r = &self.recs[i]
            # The order table outgrows the caches at peak size: ask for the bucket of an event
            # PREFETCH_AHEAD places on, so its memory latency overlaps this event's work.
            if i + PREFETCH_AHEAD < n:
                ahead = &self.recs[i + PREFETCH_AHEAD]
                if ahead.kind != K_REDEEM:
                    rc_prefetch(&self.orders[ahead.fp & self.omask])
                    if caps and ahead.kind == K_PLACED:
                        rc_prefetch(&self.btab[ahead.wfp & self.bmask])
                        if self.region_cap:
                            rc_prefetch(&self.pairs[ahead.pair_hash & self.pmask])
            if r.kind == K_PLACED:
                o = self._placed(r, &out_slot[i], &out_points[i])
                self.outcome_counts[o] += 1
            elif r.kind == K_CLOSED:
                o = self._closed(r, &out_slot[i], &out_points[i])
            elif r.kind == K_COMPLETED:
                o = self._completed(r, &out_slot[i], &out_points[i])
            else:
                o, cost = self._redeem(<object> r.event)
                out_points[i] = cost
            out[i] = <uint8_t> o
        return outcome_arr, slot_arr, points_arr

    cdef int _placed(self, rc_rec *r, int32_t *out_slot, int32_t *out_points) except -1:
        if (self.n_orders + 1) * 4 > <Py_ssize_t> (self.omask + 1) * 3:
            self._grow_orders()
        cdef uint64_t oi = rc_fp_probe(self.orders, self.omask, r.fp, r.fp2)
        cdef int32_t seen = self.orders[oi].val
        if seen == ORDER_PLACED or seen > 0:
            return DUPLICATE
        if seen == 0:
            self.orders[oi].fp = r.fp
            self.orders[oi].fp2 = r.fp2
            self.n_orders += 1
        self.orders[oi].val = ORDER_PLACED  # a redelivery of this event is now a duplicate
        if seen == ORDER_TOMBSTONE:
            return CLOSED
        if r.ts < self.starts or r.ts >= self.ends:
            return OUTSIDE_WINDOW
        cdef Py_ssize_t row = r.row
        if row < 0:
            return NO_REWARD_REGION
        if r.paid < self.min_paid:
            return BELOW_MIN_PAID

        cdef Py_ssize_t b = -1
        cdef uint64_t pi = 0
        if self.cap or self.region_cap:
            b = self._bene_find(r.wfp, r.wfp2)
            if self.cap and b >= 0 and self.held[b] >= self.cap:
                return BENEFICIARY_CAP
            if self.region_cap and b >= 0:
                pi = self._pair_slot(b, row, r.pair_hash)
                if self.pairs[pi].val != 0 and self.pairs[pi].val - 1 >= self.region_cap:
                    return BENEFICIARY_REGION_CAP

        cdef int32_t slot
        cdef bint from_heap = self.releases and self.heap_len[row] > 0
        if from_heap:
            slot = self.heap[self.heap_off[row]]
        elif self.used[row] < self.slots[row]:
            slot = self.used[row] + 1
        else:
            return SOLD_OUT
        cdef int32_t points = self._points_for(row, slot)
        if self.budget and self.awarded_points + points > self.budget:
            return BUDGET_EXHAUSTED

        if from_heap:
            self._heap_pop(row)
        else:
            self.used[row] += 1
        if b < 0:
            if not (self.cap or self.region_cap):
                rc_hash_str(r.who, &r.wfp, &r.wfp2)
            b = self._bene_intern(r.who, r.wfp, r.wfp2)
        if self.n_claims >= self.a_c_row.shape[0]:
            self._grow_claims()
        cdef Py_ssize_t c = self.n_claims
        self.n_claims += 1
        self.claim_orders.append(<object> r.order)
        self.c_row[c] = <int32_t> row
        self.c_slot[c] = slot
        self.c_points[c] = points
        self.c_bene[c] = <int32_t> b
        self.c_ts[c] = r.ts
        self.orders[oi].val = <int32_t> (c + 1)
        self.taken[row] += 1
        self.awarded_points += points
        self.held[b] += 1
        if self.region_cap:
            if (self.n_pairs + 1) * 4 > <Py_ssize_t> (self.pmask + 1) * 3:
                self._grow_pairs()
            pi = self._pair_slot(b, row, r.pair_hash)
            if self.pairs[pi].val == 0:
                self.pairs[pi].fp = ((<uint64_t> b) << 32) | <uint64_t> row
                self.pairs[pi].val = 1
                self.n_pairs += 1
            self.pairs[pi].val += 1
        if self.settle_placed:
            self.c_state[c] = CONFIRMED_STATE
            self.confirmed[b] += points
        else:
            self.c_state[c] = PENDING
            self.pending[b] += points
        out_slot[0] = slot
        out_points[0] = points
        return AWARDED

    cdef inline Py_ssize_t _claim_of(self, rc_rec *r, uint64_t *oi) noexcept:
        """Claim index of the record's order, -1 if none; oi gets the table slot."""
        oi[0] = rc_fp_probe(self.orders, self.omask, r.fp, r.fp2)
        cdef int32_t v = self.orders[oi[0]].val
        return v - 1 if v > 0 else -1

    cdef int _closed(self, rc_rec *r, int32_t *out_slot, int32_t *out_points) except -1:
        if (self.n_orders + 1) * 4 > <Py_ssize_t> (self.omask + 1) * 3:
            self._grow_orders()
        cdef uint64_t oi
        cdef Py_ssize_t c = self._claim_of(r, &oi)
        if self.orders[oi].val == 0:
            self.orders[oi].fp = r.fp
            self.orders[oi].fp2 = r.fp2
            self.orders[oi].val = ORDER_TOMBSTONE
            self.n_orders += 1
            return TOMBSTONED
        if c < 0 or self.c_state[c] == REVOKED_STATE:
            return UNCHANGED
        cdef Py_ssize_t b = self.c_bene[c]
        cdef Py_ssize_t row = self.c_row[c]
        cdef int32_t points = self.c_points[c]
        if self.c_state[c] == CONFIRMED_STATE:
            self.confirmed[b] -= points
        else:
            self.pending[b] -= points
        self.c_state[c] = REVOKED_STATE
        self.awarded_points -= points
        self.held[b] -= 1
        self.taken[row] -= 1
        if self.region_cap:
            self.pairs[self._pair_slot(b, row, self._pair_hash_of(b, row))].val -= 1
        if self.releases:
            self._heap_push(row, self.c_slot[c])
        out_slot[0] = self.c_slot[c]
        out_points[0] = points
        return REVOKED

    cdef int _completed(self, rc_rec *r, int32_t *out_slot, int32_t *out_points) except -1:
        cdef uint64_t oi
        cdef Py_ssize_t c = self._claim_of(r, &oi)
        if c < 0 or self.c_state[c] != PENDING:
            return UNCHANGED
        cdef Py_ssize_t b = self.c_bene[c]
        self.c_state[c] = CONFIRMED_STATE
        self.pending[b] -= self.c_points[c]
        self.confirmed[b] += self.c_points[c]
        out_slot[0] = self.c_slot[c]
        out_points[0] = self.c_points[c]
        return CONFIRMED

    def _redeem(self, ev):
        prior = self.redemption_log.get(ev.redemption_id)
        if prior is not None:
            return prior
        k = self.prize_index.get(ev.prize)
        if k is None:
            result = (int(Outcome.UNKNOWN_PRIZE), 0)
        else:
            cost = self.campaign.prizes[k].cost_points * ev.qty
            who = ev.beneficiary
            uwho = <PyObject *> who
            b = -1
            if PyUnicode_CheckExact(uwho):
                b = self._find_name(who)
            available = self.a_confirmed[b] - self.a_redeemed[b] if b >= 0 else 0
            if available < cost:
                result = (int(Outcome.INSUFFICIENT_POINTS), 0)
            elif self.a_stock[k] < ev.qty:
                result = (int(Outcome.OUT_OF_STOCK), 0)
            else:
                self.a_stock[k] -= ev.qty
                self.a_redeemed[b] += cost
                result = (int(Outcome.REDEEMED), cost)
        self.redemption_log[ev.redemption_id] = result
        return result

    def _find_name(self, str who):
        cdef uint64_t fp
        cdef uint32_t fp2
        rc_hash_str(<PyObject *> who, &fp, &fp2)
        return self._bene_find(fp, fp2)

    # -- views -------------------------------------------------------------------------------
    @property
    def orders_remembered(self):
        return self.n_orders

    @property
    def order_table_bytes(self):
        """Bytes held by the order-id table (the per-order memory cost)."""
        return self.a_orders.nbytes

    def claim_rows(self):
        """(order_ids, region codes, slots, points, beneficiary names, state names, ts)."""
        n = self.n_claims
        return (
            self.claim_orders,
            self.a_codes[self.a_c_row[:n]],
            self.a_c_slot[:n],
            self.a_c_points[:n],
            [self.names[b] for b in self.a_c_bene[:n]],
            [CLAIM_STATE_NAMES[s] for s in self.a_c_state[:n]],
            self.a_c_ts[:n],
        )

    def balance_rows(self):
        """(names, pending, confirmed, redeemed) for every interned beneficiary."""
        n = self.n_bene
        return (self.names, self.a_pending[:n], self.a_confirmed[:n], self.a_redeemed[:n])

    def balance_of(self, str who):
        b = self._find_name(who)
        if b < 0:
            return (0, 0, 0)
        return (int(self.a_pending[b]), int(self.a_confirmed[b]), int(self.a_redeemed[b]))

    def outcome_count_array(self):
        return np.array([self.outcome_counts[k] for k in range(N_OUTCOMES)], np.int64)

    def redemption_items(self):
        return {rid: o for rid, (o, _) in self.redemption_log.items()}

    def stock_array(self):
        return self.a_stock.copy()

    def region_counts(self, int64_t code):
        """(slots, taken, remaining) of a region, or None when it is not a reward region."""
        row = self._region_row(code)
        if row < 0:
            return None
        free = self.a_slots[row] - self.a_used[row] + self.a_heap_len[row]
        return (int(self.a_slots[row]), int(self.a_taken[row]), int(free))

    @property
    def awarded_points_total(self):
        return self.awarded_points

    # -- snapshots (durable mode) ------------------------------------------------------------
    _ARRAYS = ("a_used", "a_taken", "a_heap_len", "a_heap_off", "a_heap", "a_orders", "a_btab",
               "a_held", "a_pending", "a_confirmed", "a_redeemed", "a_pairs",
               "a_c_row", "a_c_slot", "a_c_points", "a_c_bene", "a_c_state", "a_c_ts",
               "a_stock")

    def snapshot(self):
        """The whole mutable state as (numpy arrays, plain Python values); `restore` takes it."""
        arrays = {name[2:]: getattr(self, name).copy() for name in self._ARRAYS}
        arrays["outcomes"] = self.outcome_count_array()
        scalars = {
            "campaign_id": self.campaign.id,
            "n_orders": self.n_orders, "n_bene": self.n_bene, "n_pairs": self.n_pairs,
            "n_claims": self.n_claims, "awarded_points": self.awarded_points,
            "names": list(self.names), "claim_orders": list(self.claim_orders),
            "redemptions": {k: list(v) for k, v in self.redemption_log.items()},
        }
        return arrays, scalars

    def restore(self, dict arrays, dict scalars):
        if scalars["campaign_id"] != self.campaign.id:
            raise ValueError(f"snapshot is of campaign {scalars['campaign_id']!r}, "
                             f"not {self.campaign.id!r}")
        for name in self._ARRAYS:
            setattr(self, name, np.ascontiguousarray(arrays[name[2:]]))
        cdef int k
        counts = arrays["outcomes"]
        for k in range(N_OUTCOMES):
            self.outcome_counts[k] = counts[k]
        self.n_orders = scalars["n_orders"]
        self.n_bene = scalars["n_bene"]
        self.n_pairs = scalars["n_pairs"]
        self.n_claims = scalars["n_claims"]
        self.awarded_points = scalars["awarded_points"]
        self.names = list(scalars["names"])
        self.claim_orders = list(scalars["claim_orders"])
        self.redemption_log = {k: tuple(v) for k, v in scalars["redemptions"].items()}
        self._bind_state()
