# cython: language_level=3
"""The shared-memory claim engine: DESIGN.md's rules over arrays in one shared segment.

Several worker processes on one host attach the same segment (multiprocessing.shared_memory)
and claim from the same regions. Every array and counter of the claim state lives in the
segment, strings too (order ids of claims, beneficiary names, redemption ids, in a bytes
arena), so any process can export the whole state.

Concurrency: one robust, process-shared pthread mutex in the segment header (shm_sync.h).
A batch is applied in two passes like the memory engine's: pass one (read the Struct
fields, validate, hash ids, look up the region, decide the checks that need no state) runs
outside the lock, in parallel in every worker; pass two (the table and counter changes)
runs under it. The lock is taken once per batch, so its cost is a few hundred nanoseconds
per several thousand events; bench/bench_shm.py measures the time it is held and waited for.

The semantics mirror ext/engine.pyx exactly (same order of checks, same fingerprints, the
smallest released slot first); the capacities are fixed when the segment is created, and
a batch that could overflow one is refused before it changes anything.

Layout: a header (rc_shm_header) then the arrays, each at the offset the header records:
  used, taken, heap_len per region row; heap (released slots, per-row slices)
  orders       rc_fpslot[otab]: order fingerprint -> -1 placed, -2 tombstone, c+1 claim c
  btab         beneficiary fingerprint -> index+1; per index held, pending, confirmed,
               redeemed and the name (arena offset, bytes | kind << 28)
  pkeys/pvals  (beneficiary << 32 | row) -> held + 1, used when the per-region cap is set
  claims       row, slot, points, beneficiary, state, ts, order id (arena offset, length)
  rtab         redemption fingerprint -> index+1; per index outcome, cost, id
  stock        units left per prize
  arena        the bytes of every string above, appended
"""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

cimport numpy as cnp
import numpy as np

from rc_common cimport *  # ext/rc_common.pxd: hash tables, int reads, outcome codes
from shm cimport *  # ext/shm.pxd: the C declarations (lock, router)

include "rc_read.pxi"   # pass one: reading and checking event fields
include "rc_rules.pxi"  # the rules

cnp.import_array()

cdef extern from "<errno.h>":
    enum:
        EOWNERDEAD

cdef extern from "<sys/mman.h>":
    enum:
        MADV_REMOVE
    int madvise(void *addr, size_t length, int advice) nogil


cdef void _zero_bytes(char *p, size_t n, bint sparse) noexcept:
    """memset(p, 0, n); in a sparse segment large page-aligned stretches are punched out of
    its tmpfs file instead: zeroing a big, mostly unused table must not allocate it."""
    cdef size_t page = 4096
    cdef size_t a = <size_t> p
    cdef size_t lo = (a + page - 1) & ~(page - 1)
    cdef size_t hi = (a + n) & ~(page - 1)
    if sparse and n >= (1 << 20) and hi > lo:
        memset(p, 0, lo - a)
        memset(<char *> hi, 0, a + n - hi)
        if madvise(<void *> lo, hi - lo, MADV_REMOVE) == 0:
            return
        memset(<char *> lo, 0, hi - lo)
    else:
        memset(p, 0, n)

cdef extern from "Python.h":
    object PyUnicode_FromKindAndData(int kind, const void *buffer, Py_ssize_t size)



# Array slots of rc_shm_header.off, in layout order.
cdef enum:
    A_USED = 0
    A_TAKEN
    A_HEAP_LEN
    A_RANKED
    A_HEAP
    A_ORDERS
    A_BTAB
    A_BFP
    A_HELD
    A_PENDING
    A_CONFIRMED
    A_REDEEMED
    A_BNAME_OFF
    A_BNAME_LEN
    A_PAIRS
    A_C_ROW
    A_C_SLOT
    A_C_POINTS
    A_C_BENE
    A_C_STATE
    A_C_TS
    A_C_RANK
    A_C_SETTLED
    A_C_REVOKED
    A_C_OOFF
    A_C_OLEN
    A_RTAB
    A_R_OUTCOME
    A_R_COST
    A_R_IDOFF
    A_R_IDLEN
    A_STOCK
    A_ARENA
    N_ARRAYS

# (name, numpy dtype, what sets its length: a key of the caps dict (see layout()), bytes per
# item), in the order of the A_* slots; a fingerprint slot is two uint64 words
ARRAYS = (
    ("used", "i4", "regions", 4), ("taken", "i4", "regions", 4),
    ("heap_len", "i4", "regions", 4), ("ranked", "i8", "regions", 8),
    ("heap", "i4", "heap", 4), ("orders", "u8", "otab", 16), ("btab", "u8", "btab", 16),
    ("bfp", "u8", "beneficiaries", 8), ("held", "i4", "beneficiaries", 4),
    ("pending", "i8", "beneficiaries", 8), ("confirmed", "i8", "beneficiaries", 8),
    ("redeemed", "i8", "beneficiaries", 8), ("bname_off", "i8", "beneficiaries", 8),
    ("bname_len", "i4", "beneficiaries", 4), ("pairs", "u8", "ptab", 16),
    ("c_row", "i4", "claims", 4), ("c_slot", "i4", "claims", 4),
    ("c_points", "i4", "claims", 4), ("c_bene", "i4", "claims", 4),
    ("c_state", "u1", "claims", 1), ("c_ts", "i8", "claims", 8),
    ("c_rank", "i8", "claims", 8), ("c_settled", "i8", "claims", 8),
    ("c_revoked", "i8", "claims", 8), ("c_ooff", "i8", "claims", 8),
    ("c_olen", "i4", "claims", 4), ("rtab", "u8", "rtab", 16),
    ("r_outcome", "i4", "redemptions", 4), ("r_cost", "i8", "redemptions", 8),
    ("r_idoff", "i8", "redemptions", 8), ("r_idlen", "i4", "redemptions", 4),
    ("stock", "i8", "prizes", 8), ("arena", "u1", "arena", 1),
)
assert len(ARRAYS) == N_ARRAYS <= RC_SHM_N_OFFSETS
ARRAY_NAMES = tuple(a[0] for a in ARRAYS)
ARRAY_DTYPES = tuple(a[1] for a in ARRAYS)
ARRAY_LENGTHS = tuple(a[2] for a in ARRAYS)
ARRAY_ITEMS = tuple(a[3] for a in ARRAYS)
_TABLES = (A_ORDERS, A_BTAB, A_PAIRS, A_RTAB)  # hash tables: re-inserted on restore

HEADER_BYTES = (sizeof(rc_shm_header) + 4095) // 4096 * 4096
MAX_PARTS = RC_SHM_MAX_PARTS
MAX_PIDS = RC_SHM_MAX_PIDS
# a string's length word: bytes | kind << 28 (ids are at most 256 characters)
cdef enum:
    KIND_SHIFT = 28
    LEN_MASK = (1 << 28) - 1


def layout(dict caps):
    """(total bytes, offsets) of a segment whose array lengths `caps` gives (see ARRAY_LENGTHS)."""
    offsets = []
    cdef int64_t pos = HEADER_BYTES
    for k in range(N_ARRAYS):
        pos = (pos + 63) // 64 * 64
        offsets.append(pos)
        pos += max(int(caps[ARRAY_LENGTHS[k]]), 1) * ARRAY_ITEMS[k]
    return (pos + 4095) // 4096 * 4096, offsets


FLAG_TRANSIENT = RC_SHM_TRANSIENT
FLAG_DURABLE = RC_SHM_DURABLE
FLAG_SPARSE = RC_SHM_SPARSE


def header_info(buffer):
    """What the header of a segment says, without knowing its campaign (for shm-ls, shm-rm);
    None when it is not a rewardcore segment."""
    cdef Py_buffer v
    cdef rc_shm_header *h
    PyObject_GetBuffer(buffer, &v, 0)
    try:
        if v.len < <Py_ssize_t> sizeof(rc_shm_header):
            return None
        h = <rc_shm_header *> v.buf
        if h.magic != RC_SHM_MAGIC:
            return None
        return {
            "version": h.version, "ready": rc_is_ready(h) == 1, "bytes": h.total_size,
            "flags": h.flags, "poisoned": bool(h.poisoned),
            "pids": [h.pids[k] for k in range(RC_SHM_MAX_PIDS) if h.pids[k] != 0],
            "orders": h.n_orders, "claims": h.n_claims, "beneficiaries": h.n_bene,
            "redemptions": h.n_red, "wal": (h.wal_gen, h.wal_bytes, h.wal_seq),
        }
    finally:
        PyBuffer_Release(&v)


def segment_ready(buffer):
    """True once the creator of the segment behind `buffer` has laid it out."""
    cdef Py_buffer v
    PyObject_GetBuffer(buffer, &v, 0)
    try:
        if v.len < <Py_ssize_t> sizeof(rc_shm_header):
            return False
        return rc_is_ready(<rc_shm_header *> v.buf) == 1
    finally:
        PyBuffer_Release(&v)


cdef inline Py_ssize_t _str_bytes(PyObject *s) noexcept:
    return PyUnicode_GET_LENGTH(s) * PyUnicode_KIND(s)


from rewardcore.errors import BackendError


class CapacityError(BackendError):
    """A batch could overflow a capacity fixed when the segment was created."""


class StateError(BackendError):
    """The segment is not one this process can use (layout, campaign, locking)."""


cdef class ShmCore(RulesStorage):
    """Claim state of one campaign in a shared segment; see the module docstring."""

    # the segment
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef rc_shm_header *h
    # what only this engine keeps: strings in the arena, redemptions
    cdef int64_t *bname_off
    cdef int32_t *bname_len
    cdef int64_t *c_ooff
    cdef int32_t *c_olen
    cdef rc_fpslot *rtab
    cdef uint64_t rtmask
    cdef int32_t *r_outcome
    cdef int64_t *r_cost
    cdef int64_t *r_idoff
    cdef int32_t *r_idlen
    cdef uint8_t *arena
    # the lock, as this process holds it
    cdef bint locked
    cdef uint64_t t_locked
    # pass one scratch and what the prepared batch may need
    cdef Py_ssize_t n_prepared
    cdef Py_ssize_t need_orders, need_placed, need_redeem, need_arena

    def __init__(self, campaign, buffer, bint create, dict caps=None, uint64_t campaign_fp=0,
                 uint32_t flags=0):
        self.has_view = False
        self.locked = False
        self.n_prepared = 0
        # No growing: room is checked before the batch (check_room), and that check counts
        # new beneficiaries, so pass one hashes them.
        self.bind_campaign(campaign, False, True)
        heap_total = self.tables.heap_total

        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE)
        self.has_view = True
        self.base = <char *> self.view.buf
        self.h = <rc_shm_header *> self.base
        cdef rc_shm_header *h = self.h
        cdef uint64_t probe_lo
        cdef uint32_t probe_hi
        if create:
            caps = dict(caps, regions=self.n_regions, heap=heap_total,
                        prizes=len(campaign.prizes))
            total, offsets = layout(caps)
            if total > self.view.len:
                raise StateError(f"segment of {self.view.len} bytes is smaller than the "
                                 f"{total} its capacities need")
            memset(self.base, 0, sizeof(rc_shm_header))
            h.magic = RC_SHM_MAGIC
            h.version = RC_SHM_VERSION
            h.total_size = total
            h.campaign_fp = campaign_fp
            h.flags = flags
            h.cap_orders = caps["orders"]
            h.otab_size = caps["otab"]
            h.cap_claims = caps["claims"]
            h.cap_bene = caps["beneficiaries"]
            h.btab_size = caps["btab"]
            h.ptab_size = caps["ptab"]
            h.cap_arena = caps["arena"]
            h.cap_red = caps["redemptions"]
            h.rtab_size = caps["rtab"]
            h.n_regions = self.n_regions
            h.heap_total = heap_total
            h.n_prizes = len(campaign.prizes)
            rc_hash_bytes(b"rewardcore hash probe", 21, 1, &h.hash_lo, &h.hash_hi)
            for k in range(N_ARRAYS):
                h.off[k] = offsets[k]
            err = rc_mutex_init(&h.mutex)
            if err:
                raise OSError(err, "cannot initialise the segment's process-shared mutex")
            self._bind()
            self._init_stock()
            rc_set_ready(h)
        else:
            if self.view.len < <Py_ssize_t> sizeof(rc_shm_header) or h.magic != RC_SHM_MAGIC:
                raise StateError("not a rewardcore segment (bad magic)")
            if h.version != RC_SHM_VERSION:
                raise StateError(f"segment layout version {h.version}, this build reads "
                                 f"{RC_SHM_VERSION}")
            if rc_is_ready(h) != 1:
                raise StateError("segment is not laid out yet (its creator died?)")
            if <int64_t> h.total_size > self.view.len:
                raise StateError("segment is shorter than its header says")
            rc_hash_bytes(b"rewardcore hash probe", 21, 1, &probe_lo, &probe_hi)
            if h.hash_lo != probe_lo or h.hash_hi != probe_hi:
                raise StateError("segment was made by a build whose order-id hash differs")
            if h.campaign_fp != campaign_fp:
                raise StateError("segment holds the state of a different campaign "
                                 "(or a different version of this campaign file)")
            if h.n_regions != self.n_regions or h.heap_total != heap_total:
                raise StateError("segment's region tables do not match the campaign")
            self._bind()

    cdef void _bind(self) noexcept:
        cdef rc_shm_header *h = self.h
        cdef char *b = self.base
        cdef rc_core *s = &self.s
        s.used = <int32_t *> (b + h.off[A_USED])
        s.taken = <int32_t *> (b + h.off[A_TAKEN])
        s.heap_len = <int32_t *> (b + h.off[A_HEAP_LEN])
        s.ranked = <int64_t *> (b + h.off[A_RANKED])
        s.heap = <int32_t *> (b + h.off[A_HEAP])
        s.orders = <rc_fpslot *> (b + h.off[A_ORDERS])
        s.omask = h.otab_size - 1
        s.btab = <rc_fpslot *> (b + h.off[A_BTAB])
        s.bmask = h.btab_size - 1
        s.bfp = <uint64_t *> (b + h.off[A_BFP])
        s.held = <int32_t *> (b + h.off[A_HELD])
        s.pending = <int64_t *> (b + h.off[A_PENDING])
        s.confirmed = <int64_t *> (b + h.off[A_CONFIRMED])
        s.redeemed = <int64_t *> (b + h.off[A_REDEEMED])
        s.pairs = <rc_fpslot *> (b + h.off[A_PAIRS])
        s.pmask = h.ptab_size - 1
        s.c_row = <int32_t *> (b + h.off[A_C_ROW])
        s.c_slot = <int32_t *> (b + h.off[A_C_SLOT])
        s.c_points = <int32_t *> (b + h.off[A_C_POINTS])
        s.c_bene = <int32_t *> (b + h.off[A_C_BENE])
        s.c_state = <uint8_t *> (b + h.off[A_C_STATE])
        s.c_ts = <int64_t *> (b + h.off[A_C_TS])
        s.c_rank = <int64_t *> (b + h.off[A_C_RANK])
        s.c_settled = <int64_t *> (b + h.off[A_C_SETTLED])
        s.c_revoked = <int64_t *> (b + h.off[A_C_REVOKED])
        s.stock = <int64_t *> (b + h.off[A_STOCK])
        s.n_orders = &h.n_orders
        s.n_bene = &h.n_bene
        s.n_pairs = &h.n_pairs
        s.n_claims = &h.n_claims
        s.awarded_points = &h.awarded_points
        s.outcomes = h.outcomes
        self.bname_off = <int64_t *> (b + h.off[A_BNAME_OFF])
        self.bname_len = <int32_t *> (b + h.off[A_BNAME_LEN])
        self.c_ooff = <int64_t *> (b + h.off[A_C_OOFF])
        self.c_olen = <int32_t *> (b + h.off[A_C_OLEN])
        self.rtab = <rc_fpslot *> (b + h.off[A_RTAB])
        self.rtmask = h.rtab_size - 1
        self.r_outcome = <int32_t *> (b + h.off[A_R_OUTCOME])
        self.r_cost = <int64_t *> (b + h.off[A_R_COST])
        self.r_idoff = <int64_t *> (b + h.off[A_R_IDOFF])
        self.r_idlen = <int32_t *> (b + h.off[A_R_IDLEN])
        self.arena = <uint8_t *> (b + h.off[A_ARENA])

    cdef void _init_stock(self) noexcept:
        cdef Py_ssize_t k = 0
        for p in self.campaign.prizes:
            self.s.stock[k] = p.stock
            k += 1

    def release(self):
        """Drop this process's hold on the segment's buffer (before the segment closes)."""
        if self.locked:
            self.unlock()
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self.base = NULL
            self.h = NULL

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)

    cdef int _alive(self) except -1:
        if not self.has_view:
            raise StateError("the segment was closed in this process")
        return 0

    # -- the lock ------------------------------------------------------------------------
    def lock(self):
        """Take the segment's mutex. True when the state is suspect: a holder died mid-batch
        (now or earlier); the lock is held either way and the caller decides."""
        self._alive()
        if self.locked:
            raise StateError("the segment's lock is already held by this process")
        cdef int rc
        cdef uint64_t t = 0
        with nogil:
            rc = rc_lock(self.h, &t)
        if rc == EOWNERDEAD:
            rc_mutex_consistent(self.h)
            self.h.poisoned = 1
        elif rc != 0:
            raise OSError(rc, "cannot lock the segment's mutex")
        self.locked = True
        self.t_locked = t
        return self.h.poisoned != 0

    def unlock(self):
        if not self.locked:
            return
        self.locked = False
        cdef int rc = rc_unlock(self.h, self.t_locked)
        if rc != 0:
            raise OSError(rc, "cannot unlock the segment's mutex")

    @property
    def is_locked(self):
        return self.locked

    cdef int _need_lock(self) except -1:
        if not self.locked:
            raise StateError("the segment's lock must be held")
        return 0

    def clear_poison(self):
        self._need_lock()
        self.h.poisoned = 0

    # -- pass one: outside the lock ------------------------------------------------------
    def prepare(self, list events):
        """Read, validate and hash a batch; raises before anything changes. Returns its size."""
        self._alive()
        cdef Py_ssize_t n = len(events)
        cdef Py_ssize_t i
        cdef rc_rec *r
        self.n_prepared = 0
        self.need_orders = self.need_placed = self.need_redeem = self.need_arena = 0
        self.read_batch(events)  # outside the lock, in parallel in every worker
        for i in range(n):  # what the batch may need, at most (check_room)
            r = &self.recs[i]
            if r.kind == K_PLACED:
                self.need_orders += 1
                self.need_placed += 1
                self.need_arena += _str_bytes(r.order) + _str_bytes(r.who)
            elif r.kind == K_CLOSED or r.kind == K_COMPLETED:
                self.need_orders += 1
            else:
                self.need_redeem += 1
                self.need_arena += _str_bytes(r.order)
        self.n_prepared = n
        return n

    # -- capacity ------------------------------------------------------------------------
    def check_room(self):
        """Raise CapacityError, before any change, when the prepared batch could overflow a
        capacity. Counts every event as new unless that overflows; then counts exactly."""
        self._need_lock()
        cdef rc_shm_header *h = self.h
        if (h.n_orders + self.need_orders <= h.cap_orders
                and h.n_claims + self.need_placed <= h.cap_claims
                and h.n_bene + self.need_placed <= h.cap_bene
                and h.n_red + self.need_redeem <= h.cap_red
                and h.arena_used + self.need_arena <= h.cap_arena):
            return
        self._check_room_exactly()

    cdef int _check_room_exactly(self) except -1:
        cdef rc_shm_header *h = self.h
        cdef Py_ssize_t i
        cdef rc_rec *r
        cdef uint64_t j
        new_orders, new_placed, new_bene, new_red = set(), set(), set(), set()
        cdef int64_t arena = 0
        for i in range(self.n_prepared):
            r = &self.recs[i]
            key = (r.fp, r.fp2)
            if r.kind == K_REDEEM:
                j = rc_fp_probe(self.rtab, self.rtmask, r.fp, r.fp2)
                if self.rtab[j].val == 0 and key not in new_red:
                    new_red.add(key)
                    arena += _str_bytes(r.order)
                continue
            j = rc_fp_probe(self.s.orders, self.s.omask, r.fp, r.fp2)
            if self.s.orders[j].val != 0:
                continue
            new_orders.add(key)
            if r.kind == K_PLACED and key not in new_placed:
                new_placed.add(key)
                arena += _str_bytes(r.order)
                wkey = (r.wfp, r.wfp2)
                j = rc_fp_probe(self.s.btab, self.s.bmask, r.wfp, r.wfp2)
                if self.s.btab[j].val == 0 and wkey not in new_bene:
                    new_bene.add(wkey)
                    arena += _str_bytes(r.who)
        for what, have, more, cap, param in (
                ("order ids", h.n_orders, len(new_orders), h.cap_orders, "orders"),
                ("claims", h.n_claims, len(new_placed), h.cap_claims, "claims"),
                ("beneficiaries", h.n_bene, len(new_bene), h.cap_bene, "beneficiaries"),
                ("redemptions", h.n_red, len(new_red), h.cap_red, "redemptions"),
                ("bytes of strings", h.arena_used, arena, h.cap_arena, "arena")):
            if have + more > cap:
                raise CapacityError(
                    f"full: {have:,} {what} of {cap:,} held and the batch may add {more:,}; "
                    f"create the segment with a larger ?{param}=")
        return 0

    # -- pass two: under the lock --------------------------------------------------------
    def commit(self):
        """Apply the prepared batch; returns (outcome, slot, points) arrays."""
        self._need_lock()
        self.check_room()
        cdef Py_ssize_t n = self.n_prepared
        self.n_prepared = 0
        return self.apply_records(n)

    # -- storage: strings in the arena (room was checked before the batch) ---------------
    cdef inline int64_t _arena_put(self, PyObject *s, int32_t *len_word) noexcept:
        """Append a str's bytes to the arena; returns the offset."""
        cdef Py_ssize_t nb = _str_bytes(s)
        cdef int64_t at = self.h.arena_used
        memcpy(self.arena + at, PyUnicode_DATA(s), nb)
        self.h.arena_used = at + nb
        len_word[0] = <int32_t> (nb | (PyUnicode_KIND(s) << KIND_SHIFT))
        return at

    cdef object _arena_str(self, int64_t off, int32_t len_word):
        cdef int kind = len_word >> KIND_SHIFT
        return PyUnicode_FromKindAndData(kind, self.arena + off, (len_word & LEN_MASK) // kind)

    cdef inline bint _arena_eq(self, int64_t off, int32_t len_word, PyObject *s) noexcept:
        return (len_word == <int32_t> (_str_bytes(s) | (PyUnicode_KIND(s) << KIND_SHIFT))
                and memcmp(self.arena + off, PyUnicode_DATA(s), len_word & LEN_MASK) == 0)

    cdef Py_ssize_t new_bene(self, rc_rec *r) except -1:
        cdef Py_ssize_t b = self.h.n_bene
        self.bname_off[b] = self._arena_put(r.who, &self.bname_len[b])
        return b

    cdef Py_ssize_t new_claim(self, rc_rec *r) except -1:
        cdef Py_ssize_t c = self.h.n_claims
        self.c_ooff[c] = self._arena_put(r.order, &self.c_olen[c])
        return c

    cdef int redeem(self, rc_rec *r, int32_t *out_points) except -1:
        cdef uint64_t ri = rc_fp_probe(self.rtab, self.rtmask, r.fp, r.fp2)
        cdef Py_ssize_t k
        if self.rtab[ri].val != 0:
            k = self.rtab[ri].val - 1
            if not self._arena_eq(self.r_idoff[k], self.r_idlen[k], r.order):
                raise StateError("two redemption ids share a 96-bit fingerprint")
            out_points[0] = <int32_t> self.r_cost[k]
            return self.r_outcome[k]
        cdef int64_t cost
        cdef int outcome = rc_redeem_rule(&self.s, rc_find_name(&self.s, <object> r.who),
                                          self.prize_index.get(<object> r.prize, -1), r.qty,
                                          &cost)
        k = self.h.n_red
        self.r_idoff[k] = self._arena_put(r.order, &self.r_idlen[k])
        self.r_outcome[k] = outcome
        self.r_cost[k] = cost
        self.rtab[ri].fp = r.fp
        self.rtab[ri].fp2 = r.fp2
        self.rtab[ri].val = <int32_t> (k + 1)
        self.h.n_red = k + 1
        out_points[0] = <int32_t> cost
        return outcome

    # -- views (the caller holds the lock, so they are consistent) -----------------------
    def claim_rows(self):
        """(order_ids, region codes, slots, points, beneficiary names, state names, ts, rank,
        settled_ts, revoked_ts)."""
        self._need_lock()
        cdef Py_ssize_t n = self.h.n_claims
        cdef Py_ssize_t c
        orders = [self._arena_str(self.c_ooff[c], self.c_olen[c]) for c in range(n)]
        names = self._names()
        rows = self._copy(A_C_ROW, n)
        return (
            orders,
            self.tables.codes[rows],
            self._copy(A_C_SLOT, n),
            self._copy(A_C_POINTS, n),
            [names[b] for b in self._copy(A_C_BENE, n).tolist()],
            [CLAIM_STATE_NAMES[s] for s in self._copy(A_C_STATE, n).tolist()],
            self._copy(A_C_TS, n),
            self._copy(A_C_RANK, n),
            self._copy(A_C_SETTLED, n),
            self._copy(A_C_REVOKED, n),
        )

    cdef list _names(self):
        cdef Py_ssize_t b
        return [self._arena_str(self.bname_off[b], self.bname_len[b])
                for b in range(self.h.n_bene)]

    def balance_rows(self):
        """(names, pending, confirmed, redeemed) for every interned beneficiary."""
        self._need_lock()
        n = self.h.n_bene
        return (self._names(), self._copy(A_PENDING, n), self._copy(A_CONFIRMED, n),
                self._copy(A_REDEEMED, n))

    def balance_of(self, str who):
        self._need_lock()
        b = rc_find_name(&self.s, who)
        if b < 0:
            return (0, 0, 0)
        return (self.s.pending[b], self.s.confirmed[b], self.s.redeemed[b])

    def outcome_count_array(self):
        self._need_lock()
        return np.array([self.h.outcomes[k] for k in range(N_OUTCOMES)], np.int64)

    def redemption_items(self):
        self._need_lock()
        cdef Py_ssize_t k
        return {self._arena_str(self.r_idoff[k], self.r_idlen[k]): self.r_outcome[k]
                for k in range(self.h.n_red)}

    def stock_array(self):
        self._need_lock()
        return self._copy(A_STOCK, len(self.campaign.prizes))

    def region_counts(self, int64_t code):
        """(slots, taken, remaining) of a region, or None when it is not a reward region."""
        self._need_lock()
        cdef rc_core *s = &self.s
        cdef Py_ssize_t row = rc_region_row(s, code)
        if row < 0:
            return None
        free = s.slots[row] - s.used[row] + s.heap_len[row]
        return (int(s.slots[row]), int(s.taken[row]), int(free))

    def counters(self):
        """Sizes and capacities (read without the lock: a monitoring view)."""
        self._alive()
        cdef rc_shm_header *h = self.h
        return {
            "orders": h.n_orders, "orders_cap": h.cap_orders,
            "claims": h.n_claims, "claims_cap": h.cap_claims,
            "beneficiaries": h.n_bene, "beneficiaries_cap": h.cap_bene,
            "redemptions": h.n_red, "redemptions_cap": h.cap_red,
            "arena": h.arena_used, "arena_cap": h.cap_arena,
            "pairs": h.n_pairs, "awarded_points": h.awarded_points,
            "bytes": h.total_size, "poisoned": bool(h.poisoned),
            "lock_acquired": h.lock_acquired, "lock_contended": h.lock_contended,
            "lock_wait_ns": h.lock_wait_ns, "lock_held_ns": h.lock_held_ns,
        }

    def capacities(self):
        """The capacities the segment was created with (URL parameter names)."""
        self._alive()
        cdef rc_shm_header *h = self.h
        return {"orders": h.cap_orders, "claims": h.cap_claims, "beneficiaries": h.cap_bene,
                "redemptions": h.cap_red, "arena": h.cap_arena}

    # -- attached processes (under the lock) ---------------------------------------------
    def pids(self):
        self._alive()
        cdef int k
        return [self.h.pids[k] for k in range(RC_SHM_MAX_PIDS) if self.h.pids[k] != 0]

    def add_pid(self, int pid):
        self._need_lock()
        cdef int k
        for k in range(RC_SHM_MAX_PIDS):
            if self.h.pids[k] == 0:
                self.h.pids[k] = pid
                return
        raise StateError(f"more than {RC_SHM_MAX_PIDS} processes attached")

    def remove_pid(self, int pid):
        self._need_lock()
        cdef int k
        for k in range(RC_SHM_MAX_PIDS):
            if self.h.pids[k] == pid:
                self.h.pids[k] = 0
                return

    # -- durable mode and replay positions (under the lock) ------------------------------
    @property
    def flags(self):
        return self.h.flags

    def wal_state(self):
        """(generation, bytes, last sequence number) of the log this state matches."""
        self._alive()
        return (self.h.wal_gen, self.h.wal_bytes, self.h.wal_seq)

    def set_wal_state(self, int64_t gen, int64_t nbytes, int64_t seq):
        self._need_lock()
        self.h.wal_gen = gen
        self.h.wal_bytes = nbytes
        self.h.wal_seq = seq

    def positions(self):
        """(parts, [(offset, line, crc) per part]) of the last `rewardcore replay`."""
        self._alive()
        cdef int j
        n = self.h.pos_parts
        return n, [(self.h.pos_off[j], self.h.pos_line[j], self.h.pos_crc[j]) for j in range(n)]

    def set_positions(self, int parts, list which, int64_t offset, int64_t line, int64_t crc):
        """Partitions `which` (of `parts`) are applied up to byte `offset` of the input."""
        self._need_lock()
        if parts < 0 or parts > RC_SHM_MAX_PARTS:
            raise ValueError(f"at most {RC_SHM_MAX_PARTS} partitions")
        cdef int j
        if parts != self.h.pos_parts:
            self.h.pos_parts = parts
            for j in range(RC_SHM_MAX_PARTS):
                self.h.pos_off[j] = 0
                self.h.pos_line[j] = 0
                self.h.pos_crc[j] = 0
        for j in which:
            if offset >= self.h.pos_off[j]:
                self.h.pos_off[j] = offset
                self.h.pos_line[j] = line
                self.h.pos_crc[j] = crc

    # -- whole-state copies: reset, snapshot, restore (under the lock) -------------------
    cdef object _copy(self, int a, Py_ssize_t n):
        """A private copy of the first n items of array a."""
        dt = np.dtype(ARRAY_DTYPES[a])
        words = 2 if a in _TABLES else 1
        out = np.empty(n * words, dt)
        if n:
            memcpy(cnp.PyArray_DATA(out), self.base + self.h.off[a], n * ARRAY_ITEMS[a])
        return out.reshape(n, 2) if words == 2 else out

    cdef Py_ssize_t _length(self, int a):
        key = ARRAY_LENGTHS[a]
        cdef rc_shm_header *h = self.h
        return {"regions": h.n_regions, "heap": h.heap_total, "otab": h.otab_size,
                "btab": h.btab_size, "beneficiaries": h.cap_bene, "ptab": h.ptab_size,
                "claims": h.cap_claims, "rtab": h.rtab_size, "redemptions": h.cap_red,
                "prizes": h.n_prizes, "arena": h.cap_arena}[key]

    def reset_state(self):
        """Forget every order, claim and redemption (and replay positions)."""
        self._need_lock()
        cdef rc_shm_header *h = self.h
        cdef int a
        # Only what was ever written needs zeroing: rows past the counters are still zero.
        used = {"regions": h.n_regions, "heap": h.heap_total, "otab": h.otab_size,
                "btab": h.btab_size, "beneficiaries": h.n_bene, "ptab": h.ptab_size,
                "claims": h.n_claims, "rtab": h.rtab_size, "redemptions": h.n_red,
                "prizes": h.n_prizes, "arena": h.arena_used}
        for a in range(N_ARRAYS):
            _zero_bytes(self.base + h.off[a], used[ARRAY_LENGTHS[a]] * ARRAY_ITEMS[a],
                        (h.flags & RC_SHM_SPARSE) != 0)
        h.n_orders = h.n_claims = h.n_bene = h.n_pairs = h.n_red = 0
        h.arena_used = h.awarded_points = 0
        for a in range(N_OUTCOMES):
            h.outcomes[a] = 0
        h.pos_parts = 0
        for a in range(RC_SHM_MAX_PARTS):
            h.pos_off[a] = h.pos_line[a] = h.pos_crc[a] = 0
        self._init_stock()
        h.poisoned = 0

    def snapshot(self):
        """The whole claim state as (numpy arrays, plain values); `restore` takes it."""
        self._need_lock()
        cdef rc_shm_header *h = self.h
        n = {"regions": h.n_regions, "heap": h.heap_total, "otab": h.otab_size,
             "btab": h.btab_size, "beneficiaries": h.n_bene, "ptab": h.ptab_size,
             "claims": h.n_claims, "rtab": h.rtab_size, "redemptions": h.n_red,
             "prizes": h.n_prizes, "arena": h.arena_used}
        arrays = {ARRAY_NAMES[a]: self._copy(a, n[ARRAY_LENGTHS[a]]) for a in range(N_ARRAYS)}
        arrays["outcomes"] = self.outcome_count_array()
        parts, pos = self.positions()
        scalars = {
            "n_orders": h.n_orders, "n_claims": h.n_claims, "n_bene": h.n_bene,
            "n_pairs": h.n_pairs, "n_red": h.n_red, "arena_used": h.arena_used,
            "awarded_points": h.awarded_points, "positions": [parts, [list(p) for p in pos]],
        }
        return arrays, scalars

    def restore(self, dict arrays, dict scalars):
        """Load a snapshot (of a segment with the same or other capacities) into this one."""
        self._need_lock()
        cdef rc_shm_header *h = self.h
        for what, have, cap, param in (
                ("order ids", scalars["n_orders"], h.cap_orders, "orders"),
                ("claims", scalars["n_claims"], h.cap_claims, "claims"),
                ("beneficiaries", scalars["n_bene"], h.cap_bene, "beneficiaries"),
                ("redemptions", scalars["n_red"], h.cap_red, "redemptions"),
                ("bytes of strings", scalars["arena_used"], h.cap_arena, "arena")):
            if have > cap:
                raise CapacityError(f"the saved state holds {have:,} {what}, more than the "
                                    f"segment's {cap:,}; create it with a larger ?{param}=")
        self.reset_state()
        cdef int a
        cdef cnp.ndarray src
        for a in range(N_ARRAYS):
            if a in _TABLES:
                continue
            src = np.ascontiguousarray(arrays[ARRAY_NAMES[a]], dtype=ARRAY_DTYPES[a])
            if src.nbytes > self._length(a) * ARRAY_ITEMS[a]:
                raise CapacityError(f"saved array {ARRAY_NAMES[a]} does not fit the segment")
            memcpy(self.base + h.off[a], src.data, src.nbytes)
        # tables are re-inserted, so a segment of another size can take them
        # tables are re-inserted (after bfp, which pairs hash by), so a segment of another
        # size can take them
        _rehash_into(arrays["orders"], self.s.orders, self.s.omask)
        _rehash_into(arrays["btab"], self.s.btab, self.s.bmask)
        _rehash_into(arrays["rtab"], self.rtab, self.rtmask)
        cdef cnp.ndarray pairs = np.ascontiguousarray(arrays["pairs"], dtype=np.uint64)
        rc_rehash_pairs(&self.s, <rc_fpslot *> pairs.data, pairs.shape[0])
        h.n_orders = scalars["n_orders"]
        h.n_claims = scalars["n_claims"]
        h.n_bene = scalars["n_bene"]
        h.n_pairs = scalars["n_pairs"]
        h.n_red = scalars["n_red"]
        h.arena_used = scalars["arena_used"]
        h.awarded_points = scalars["awarded_points"]
        counts = arrays["outcomes"]
        for a in range(N_OUTCOMES):
            h.outcomes[a] = counts[a]
        parts, pos = scalars["positions"]
        h.pos_parts = parts
        for a in range(parts):
            h.pos_off[a], h.pos_line[a], h.pos_crc[a] = pos[a]



cdef void _rehash_into(object table, rc_fpslot *dst, uint64_t mask):
    cdef cnp.ndarray src = np.ascontiguousarray(table, dtype=np.uint64)
    rc_rehash_fp(<rc_fpslot *> src.data, src.shape[0], dst, mask)
