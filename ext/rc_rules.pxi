# The claim rules of DESIGN.md, once, for both compiled engines (included by ext/engine.pyx
# and ext/shm.pyx). They work on an rc_core: pointers to the tables and counters, wherever the
# engine keeps them (growable numpy arrays in MemoryCore, one shared segment in ShmCore), and
# the storage hooks of RulesStorage for what differs: making room (the memory engine grows its tables, the
# shared segment was checked for room before the batch), keeping a new claim's order id or a
# new beneficiary's name (a Python list, or the segment's arena), and redemptions (their
# idempotency log). The engines keep only storage, locking and snapshots.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    PREFETCH_AHEAD = 12  # events between a bucket's prefetch and its use in pass two
    GROW_ORDERS = 0
    GROW_PAIRS = 1

CLAIM_STATE_NAMES = ("pending", "confirmed", "revoked")
include "rc_outcome_codes.pxi"  # OUTCOME_CODES, generated from rewardcore.outcomes


ctypedef struct rc_core:
    # campaign settings and tables (constants)
    int64_t starts, ends, min_paid, budget, cap, region_cap
    bint releases, settle_placed, hash_who_early
    int64_t *rkeys
    int32_t *rvals
    uint64_t rmask
    int32_t *slots
    int32_t *tier_off
    int32_t *tier_upto
    int32_t *tier_points
    int64_t *heap_off
    int64_t *prize_cost
    # per region row
    int32_t *used       # never-used slots handed out
    int32_t *taken      # non-revoked claims
    int32_t *heap_len   # released slots (a min-heap per row at heap + heap_off[row])
    int32_t *heap
    int64_t *ranked     # placed events that reached slot choice
    # order fingerprint -> ORDER_* or claim + 1
    rc_fpslot *orders
    uint64_t omask
    # beneficiary fingerprint -> index + 1; per index
    rc_fpslot *btab
    uint64_t bmask
    uint64_t *bfp       # the beneficiary's fingerprint (for its pair buckets)
    int32_t *held
    int64_t *pending
    int64_t *confirmed
    int64_t *redeemed
    # (beneficiary << 32 | row) -> held + 1, only with the per-region cap
    rc_fpslot *pairs
    uint64_t pmask
    # per claim
    int32_t *c_row
    int32_t *c_slot
    int32_t *c_points
    int32_t *c_bene
    uint8_t *c_state
    int64_t *c_ts
    int64_t *c_rank
    int64_t *c_settled
    int64_t *c_revoked
    # counters
    int64_t *n_orders
    int64_t *n_bene
    int64_t *n_pairs
    int64_t *n_claims
    int64_t *awarded_points
    int64_t *outcomes
    int64_t *stock
    # the engine (a RulesStorage), borrowed: it owns this struct
    void *owner
    bint can_grow            # False: room was checked before the batch


cdef int rc_set_campaign(rc_core *s, campaign) except -1:
    """The campaign's settings (the tables are bound by the engine)."""
    info = campaign.info
    s.starts, s.ends = campaign.starts_ms, campaign.ends_ms
    s.min_paid = info.min_paid_cents
    s.budget = info.budget_points
    s.cap = info.max_claims_per_beneficiary
    s.region_cap = info.max_claims_per_beneficiary_per_region
    s.releases = campaign.releases
    s.settle_placed = campaign.settles_on_placed
    return 0


cdef class CampaignTables:
    """The campaign's flat tables as C arrays (constants; each process builds its own)."""

    cdef readonly cnp.ndarray codes, slots, tier_off, tier_upto, tier_points, rkeys, rvals
    cdef readonly cnp.ndarray heap_off, prize_cost
    cdef readonly int64_t heap_total

    def __init__(self, campaign):
        n = len(campaign.regions)
        self.codes = np.ascontiguousarray(campaign.region_codes, dtype=np.int64)
        self.slots = np.ascontiguousarray(campaign.region_slots, dtype=np.int32)
        self.tier_off = np.ascontiguousarray(campaign.tier_offsets, dtype=np.int32)
        self.tier_upto = np.ascontiguousarray(campaign.tier_upto, dtype=np.int32)
        self.tier_points = np.ascontiguousarray(campaign.tier_points, dtype=np.int32)
        cdef uint64_t cap = 16
        while cap < <uint64_t> (4 * n):
            cap <<= 1
        self.rkeys = np.zeros(cap, np.int64)
        self.rvals = np.zeros(cap, np.int32)
        cdef int64_t[::1] keys = self.rkeys
        cdef int32_t[::1] vals = self.rvals
        cdef int64_t[::1] codes = self.codes
        cdef Py_ssize_t row
        cdef uint64_t i
        for row in range(n):
            i = rc_int_probe(&keys[0], &vals[0], cap - 1, codes[row])
            keys[i] = codes[row]
            vals[i] = row + 1
        # A region's heap holds at most its slots; only "release" campaigns need one.
        sizes = self.slots.astype(np.int64) if campaign.releases else np.zeros(n, np.int64)
        self.heap_off = np.zeros(n + 1, np.int64)
        np.cumsum(sizes, out=self.heap_off[1:])
        self.heap_total = int(self.heap_off[n])
        self.prize_cost = np.array([p.cost_points for p in campaign.prizes] or [0], np.int64)

    cdef void bind(self, rc_core *s) noexcept:
        s.rkeys = <int64_t *> self.rkeys.data
        s.rvals = <int32_t *> self.rvals.data
        s.rmask = self.rkeys.shape[0] - 1
        s.slots = <int32_t *> self.slots.data
        s.tier_off = <int32_t *> self.tier_off.data
        s.tier_upto = <int32_t *> self.tier_upto.data
        s.tier_points = <int32_t *> self.tier_points.data
        s.heap_off = <int64_t *> self.heap_off.data
        s.prize_cost = <int64_t *> self.prize_cost.data


# -- small pieces ---------------------------------------------------------------------------
cdef inline Py_ssize_t rc_region_row(rc_core *s, int64_t code) noexcept:
    return s.rvals[rc_int_probe(s.rkeys, s.rvals, s.rmask, code)] - 1


cdef inline int32_t rc_points_for(rc_core *s, Py_ssize_t row, int32_t slot) noexcept:
    cdef int32_t t
    for t in range(s.tier_off[row], s.tier_off[row + 1]):
        if slot <= s.tier_upto[t]:
            return s.tier_points[t]
    return 0  # unreachable: the campaign's last tier covers every slot


cdef inline Py_ssize_t rc_bene_find(rc_core *s, uint64_t fp, uint32_t fp2) noexcept:
    """Index of a beneficiary by fingerprint, or -1."""
    return s.btab[rc_fp_probe(s.btab, s.bmask, fp, fp2)].val - 1


cdef Py_ssize_t rc_find_name(rc_core *s, str who) noexcept:
    """Index of a beneficiary by name, or -1."""
    cdef uint64_t fp
    cdef uint32_t fp2
    rc_hash_str(<PyObject *> who, &fp, &fp2)
    return rc_bene_find(s, fp, fp2)


cdef inline uint64_t rc_pair_slot(rc_core *s, Py_ssize_t b, Py_ssize_t row, uint64_t h) noexcept:
    return rc_keyed_probe(s.pairs, s.pmask, h, ((<uint64_t> b) << 32) | <uint64_t> row)


cdef inline uint64_t rc_pair_hash_of(rc_core *s, Py_ssize_t b, Py_ssize_t row) noexcept:
    return rc_pair_hash(s.bfp[b], row)


cdef void rc_heap_push(rc_core *s, Py_ssize_t row, int32_t slot) noexcept:
    cdef int32_t *h = s.heap + s.heap_off[row]
    cdef int32_t i = s.heap_len[row]
    cdef int32_t parent
    s.heap_len[row] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if h[parent] <= slot:
            break
        h[i] = h[parent]
        i = parent
    h[i] = slot


cdef void rc_heap_pop(rc_core *s, Py_ssize_t row) noexcept:
    cdef int32_t *h = s.heap + s.heap_off[row]
    cdef int32_t n = s.heap_len[row] - 1
    cdef int32_t last = h[n]
    cdef int32_t i = 0
    cdef int32_t child
    s.heap_len[row] = n
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


cdef void rc_rehash_fp(const rc_fpslot *src, Py_ssize_t n, rc_fpslot *dst,
                       uint64_t mask) noexcept:
    """Insert every used slot of src[n] into the (empty) table dst."""
    cdef Py_ssize_t i
    for i in range(n):
        if src[i].val != 0:
            dst[rc_fp_probe(dst, mask, src[i].fp, src[i].fp2)] = src[i]


cdef void rc_rehash_pairs(rc_core *s, const rc_fpslot *src, Py_ssize_t n) noexcept:
    """Insert every used pair of src[n] into the (empty) pairs table of s."""
    cdef Py_ssize_t i
    cdef uint64_t h
    for i in range(n):
        if src[i].val != 0:
            h = rc_pair_hash_of(s, <Py_ssize_t> (src[i].fp >> 32), <Py_ssize_t> (src[i].fp & 0xFFFFFFFF))
            s.pairs[rc_keyed_probe(s.pairs, s.pmask, h, src[i].fp)] = src[i]


cdef inline int rc_room_for_order(rc_core *s) except -1:
    if s.can_grow and (s.n_orders[0] + 1) * 4 > <int64_t> (s.omask + 1) * 3:
        (<RulesStorage> s.owner).grow(GROW_ORDERS)
    return 0


# -- pass one: what needs no state -----------------------------------------------------------
cdef inline void rc_prepare_placed(rc_core *s, rc_rec *r) noexcept:
    """Checks 3-5 of DESIGN.md (window, region, min paid) need no state: decided here, in pass
    one (outside the shared engine's lock)."""
    if s.hash_who_early:
        rc_hash_str(r.who, &r.wfp, &r.wfp2)
    if r.ts < s.starts or r.ts >= s.ends:
        r.static_outcome = OUTSIDE_WINDOW
        return
    r.row = rc_region_row(s, r.region)
    if r.row < 0:
        r.static_outcome = NO_REWARD_REGION
    elif r.paid < s.min_paid:
        r.static_outcome = BELOW_MIN_PAID
    elif s.region_cap:
        r.pair_hash = rc_pair_hash(r.wfp, r.row)


# -- pass two: the rules ---------------------------------------------------------------------
cdef int rc_placed(rc_core *s, rc_rec *r, int32_t *out_slot, int32_t *out_points,
                   int64_t *out_rank) except -1:
    rc_room_for_order(s)
    cdef uint64_t oi = rc_fp_probe(s.orders, s.omask, r.fp, r.fp2)
    cdef int32_t seen = s.orders[oi].val
    if seen == ORDER_PLACED or seen > 0:
        return DUPLICATE
    if seen == 0:
        s.orders[oi].fp = r.fp
        s.orders[oi].fp2 = r.fp2
        s.n_orders[0] += 1
    s.orders[oi].val = ORDER_PLACED  # a redelivery of this event is now a duplicate
    if seen == ORDER_TOMBSTONE:
        return CLOSED
    if r.static_outcome >= 0:
        return r.static_outcome
    cdef Py_ssize_t row = r.row
    cdef Py_ssize_t b = -1
    cdef uint64_t pi = 0
    if s.cap or s.region_cap:
        b = rc_bene_find(s, r.wfp, r.wfp2)
        if s.cap and b >= 0 and s.held[b] >= s.cap:
            return BENEFICIARY_CAP
        if s.region_cap and b >= 0:
            pi = rc_pair_slot(s, b, row, r.pair_hash)
            if s.pairs[pi].val != 0 and s.pairs[pi].val - 1 >= s.region_cap:
                return BENEFICIARY_REGION_CAP

    s.ranked[row] += 1
    out_rank[0] = s.ranked[row]
    cdef int32_t slot
    cdef bint from_heap = s.releases and s.heap_len[row] > 0
    if from_heap:
        slot = s.heap[s.heap_off[row]]
    elif s.used[row] < s.slots[row]:
        slot = s.used[row] + 1
    else:
        return SOLD_OUT
    cdef int32_t points = rc_points_for(s, row, slot)
    if s.budget and s.awarded_points[0] + points > s.budget:
        return BUDGET_EXHAUSTED  # the slot is not consumed

    if from_heap:
        rc_heap_pop(s, row)
    else:
        s.used[row] += 1
    if b < 0:
        b = rc_bene_intern(s, r)
    cdef Py_ssize_t c = (<RulesStorage> s.owner).new_claim(r)
    cdef bint at_once = s.settle_placed or seen == ORDER_COMPLETED
    s.c_row[c] = <int32_t> row
    s.c_slot[c] = slot
    s.c_points[c] = points
    s.c_bene[c] = <int32_t> b
    s.c_ts[c] = r.ts
    s.c_rank[c] = out_rank[0]
    s.c_settled[c] = r.ts if at_once else 0
    s.c_revoked[c] = 0
    s.c_state[c] = CONFIRMED_STATE if at_once else PENDING
    s.n_claims[0] = c + 1
    s.orders[oi].val = <int32_t> (c + 1)
    s.taken[row] += 1
    s.awarded_points[0] += points
    s.held[b] += 1
    if s.region_cap:
        if s.can_grow and (s.n_pairs[0] + 1) * 4 > <int64_t> (s.pmask + 1) * 3:
            (<RulesStorage> s.owner).grow(GROW_PAIRS)
        pi = rc_pair_slot(s, b, row, r.pair_hash)
        if s.pairs[pi].val == 0:
            s.pairs[pi].fp = ((<uint64_t> b) << 32) | <uint64_t> row
            s.pairs[pi].val = 1
            s.n_pairs[0] += 1
        s.pairs[pi].val += 1
    if at_once:
        s.confirmed[b] += points
    else:
        s.pending[b] += points
    out_slot[0] = slot
    out_points[0] = points
    return AWARDED


cdef Py_ssize_t rc_bene_intern(rc_core *s, rc_rec *r) except -1:
    """The beneficiary's index, a new one if it holds nothing yet."""
    if not s.hash_who_early:
        rc_hash_str(r.who, &r.wfp, &r.wfp2)  # pass one left it for the (rarer) award
    cdef Py_ssize_t b = rc_bene_find(s, r.wfp, r.wfp2)
    if b >= 0:
        return b
    b = (<RulesStorage> s.owner).new_bene(r)  # may grow (and rehash) the table
    cdef uint64_t i = rc_fp_probe(s.btab, s.bmask, r.wfp, r.wfp2)
    s.btab[i].fp = r.wfp
    s.btab[i].fp2 = r.wfp2
    s.btab[i].val = <int32_t> (b + 1)
    s.bfp[b] = r.wfp
    s.held[b] = 0
    s.pending[b] = 0
    s.confirmed[b] = 0
    s.redeemed[b] = 0
    s.n_bene[0] = b + 1
    return b


cdef int rc_closed(rc_core *s, rc_rec *r, int32_t *out_slot, int32_t *out_points) except -1:
    rc_room_for_order(s)
    cdef uint64_t oi = rc_fp_probe(s.orders, s.omask, r.fp, r.fp2)
    cdef int32_t v = s.orders[oi].val
    if v == 0 or v == ORDER_COMPLETED:  # never placed: a tombstone (the close wins)
        if v == 0:
            s.orders[oi].fp = r.fp
            s.orders[oi].fp2 = r.fp2
            s.n_orders[0] += 1
        s.orders[oi].val = ORDER_TOMBSTONE
        return TOMBSTONED
    if v < 0 or s.c_state[v - 1] == REVOKED_STATE:
        return UNCHANGED
    cdef Py_ssize_t c = v - 1
    cdef Py_ssize_t b = s.c_bene[c]
    cdef Py_ssize_t row = s.c_row[c]
    cdef int32_t points = s.c_points[c]
    # A confirmed claim may be spent already: available points then go below zero, and
    # redemptions are refused until they are positive again.
    if s.c_state[c] == CONFIRMED_STATE:
        s.confirmed[b] -= points
    else:
        s.pending[b] -= points
    s.c_state[c] = REVOKED_STATE
    s.c_revoked[c] = r.ts
    s.awarded_points[0] -= points
    s.held[b] -= 1
    s.taken[row] -= 1
    if s.region_cap:
        s.pairs[rc_pair_slot(s, b, row, rc_pair_hash_of(s, b, row))].val -= 1
    if s.releases:
        rc_heap_push(s, row, s.c_slot[c])
    out_slot[0] = s.c_slot[c]
    out_points[0] = points
    return REVOKED


cdef int rc_completed(rc_core *s, rc_rec *r, int32_t *out_slot, int32_t *out_points) except -1:
    rc_room_for_order(s)
    cdef uint64_t oi = rc_fp_probe(s.orders, s.omask, r.fp, r.fp2)
    cdef int32_t v = s.orders[oi].val
    if v == 0:
        # Remembered like a tombstone: the claim, if the order is awarded later, is confirmed
        # at once. Nothing visible changed, so the outcome is `unchanged`.
        s.orders[oi].fp = r.fp
        s.orders[oi].fp2 = r.fp2
        s.orders[oi].val = ORDER_COMPLETED
        s.n_orders[0] += 1
        return UNCHANGED
    if v <= 0 or s.c_state[v - 1] != PENDING:
        return UNCHANGED
    cdef Py_ssize_t c = v - 1
    cdef Py_ssize_t b = s.c_bene[c]
    s.c_state[c] = CONFIRMED_STATE
    s.c_settled[c] = r.ts
    s.pending[b] -= s.c_points[c]
    s.confirmed[b] += s.c_points[c]
    out_slot[0] = s.c_slot[c]
    out_points[0] = s.c_points[c]
    return CONFIRMED


cdef int rc_redeem_rule(rc_core *s, Py_ssize_t b, Py_ssize_t k, int64_t qty,
                        int64_t *cost) noexcept:
    """A first redemption of prize k (-1: unknown) by beneficiary b (-1: holds nothing);
    the idempotency log is the engine's. cost_points < 2**31 and qty <= 1,000,000 (validated
    in pass one), so the cost fits in int64."""
    cost[0] = 0
    if k < 0:
        return UNKNOWN_PRIZE
    cdef int64_t price = s.prize_cost[k] * qty
    cdef int64_t available = s.confirmed[b] - s.redeemed[b] if b >= 0 else 0
    if available < price:
        return INSUFFICIENT_POINTS
    if s.stock[k] < qty:
        return OUT_OF_STOCK
    s.stock[k] -= qty
    s.redeemed[b] += price
    cost[0] = price
    return REDEEMED


cdef int rc_apply(rc_core *s, rc_rec *recs, Py_ssize_t n, uint8_t *out, int32_t *out_slot,
                  int32_t *out_points, int64_t *out_rank) except -1:
    """Pass two: apply the records in order."""
    cdef Py_ssize_t i
    cdef rc_rec *r
    cdef rc_rec *ahead
    cdef int o
    cdef bint caps = s.cap or s.region_cap
    for i in range(n):
        r = &recs[i]
        # The order table outgrows the caches at peak size: ask for the bucket of an event
        # PREFETCH_AHEAD places on, so its memory latency overlaps this event's work.
        if i + PREFETCH_AHEAD < n:
            ahead = &recs[i + PREFETCH_AHEAD]
            if ahead.kind != K_REDEEM:
                rc_prefetch(&s.orders[ahead.fp & s.omask])
                if caps and ahead.kind == K_PLACED:
                    rc_prefetch(&s.btab[ahead.wfp & s.bmask])
                    if s.region_cap:
                        rc_prefetch(&s.pairs[ahead.pair_hash & s.pmask])
        if r.kind == K_PLACED:
            o = rc_placed(s, r, &out_slot[i], &out_points[i], &out_rank[i])
            s.outcomes[o] += 1
        elif r.kind == K_CLOSED:
            o = rc_closed(s, r, &out_slot[i], &out_points[i])
        elif r.kind == K_COMPLETED:
            o = rc_completed(s, r, &out_slot[i], &out_points[i])
        else:
            o = (<RulesStorage> s.owner).redeem(r, &out_points[i])
        out[i] = <uint8_t> o
    return 0


def decision_arrays(Py_ssize_t n):
    """Empty (outcome, slot, points, rank) arrays for a batch of n events."""
    return np.empty(n, np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int64)


cdef class RulesStorage:
    """What both engines hold for the rules (the campaign, the rc_core, pass one's records),
    and what the rules ask of an engine's storage (each engine overrides the hooks)."""

    cdef rc_core s
    cdef object campaign
    cdef CampaignTables tables
    cdef bint pays_merchant
    cdef Py_ssize_t n_regions
    cdef dict prize_index
    cdef cnp.ndarray a_recs
    cdef rc_rec *recs

    cdef int bind_campaign(self, campaign, bint can_grow, bint hash_who_early) except -1:
        self.campaign = campaign
        self.tables = CampaignTables(campaign)
        self.pays_merchant = campaign.pays_merchant
        self.n_regions = len(campaign.regions)
        self.prize_index = {p.id: k for k, p in enumerate(campaign.prizes)}
        rc_set_campaign(&self.s, campaign)
        self.tables.bind(&self.s)
        self.s.owner = <void *> self
        self.s.can_grow = can_grow
        self.s.hash_who_early = hash_who_early
        self.a_recs = np.zeros(0, np.uint8)
        self.recs = NULL
        return 0

    cdef int read_batch(self, list events) except -1:
        """Pass one into self.recs: read and check every event (EventError, worded by
        rewardcore.events, before any change), hash its ids, decide what needs no state."""
        cdef Py_ssize_t n = len(events)
        cdef Py_ssize_t i
        cdef rc_rec *r
        if self.a_recs.shape[0] < n * <Py_ssize_t> sizeof(rc_rec):
            self.a_recs = np.zeros(max(n, 1024) * sizeof(rc_rec), np.uint8)
            self.recs = <rc_rec *> self.a_recs.data
        for i in range(n):
            r = &self.recs[i]
            if not rc_read(<PyObject *> events[i], r, self.pays_merchant):
                rc_refuse(events, i)
            if r.kind == K_PLACED:
                rc_prepare_placed(&self.s, r)
        return 0

    cdef object apply_records(self, Py_ssize_t n):
        """Pass two over the first n records; the (outcome, slot, points, rank) arrays."""
        out = decision_arrays(n)
        rc_apply(&self.s, self.recs, n, <uint8_t *> (<cnp.ndarray> out[0]).data,
                 <int32_t *> (<cnp.ndarray> out[1]).data,
                 <int32_t *> (<cnp.ndarray> out[2]).data,
                 <int64_t *> (<cnp.ndarray> out[3]).data)
        return out

    cdef int grow(self, int what) except -1:
        """Make room in table `what` (GROW_*); only called when rc_core.can_grow."""
        raise NotImplementedError

    cdef Py_ssize_t new_bene(self, rc_rec *r) except -1:
        """Keep r.who's name at beneficiary index *n_bene (making room); return the index."""
        raise NotImplementedError

    cdef Py_ssize_t new_claim(self, rc_rec *r) except -1:
        """Keep r.order at claim index *n_claims (making room); return the index."""
        raise NotImplementedError

    cdef int redeem(self, rc_rec *r, int32_t *out_points) except -1:
        """A redemption: the engine's idempotency log around rc_redeem_rule."""
        raise NotImplementedError
