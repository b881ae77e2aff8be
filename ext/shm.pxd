# cython: language_level=3
"""Declarations of the shared-memory claim engine (ext/shm.pyx)."""

from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cimport numpy as cnp


cdef extern from "rc_tables.h":
    ctypedef struct rc_fpslot:
        uint64_t fp
        uint32_t fp2
        int32_t val
    void rc_hash_bytes(const void *data, size_t n, uint32_t kind, uint64_t *lo, uint32_t *hi) nogil
    uint64_t rc_fp_probe(const rc_fpslot *t, uint64_t mask, uint64_t fp, uint32_t fp2) nogil
    uint64_t rc_int_probe(const int64_t *keys, const int32_t *vals, uint64_t mask, int64_t key) nogil
    void rc_prefetch(const void *p) nogil


cdef extern from "shm_sync.h":
    enum:
        RC_SHM_MAGIC
        RC_SHM_VERSION
        RC_SHM_MAX_PIDS
        RC_SHM_MAX_PARTS
        RC_SHM_N_OUTCOMES
        RC_SHM_N_OFFSETS
        RC_SHM_TRANSIENT
        RC_SHM_DURABLE
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct rc_shm_header:
        uint64_t magic
        uint32_t version
        uint32_t ready
        uint64_t total_size
        uint64_t campaign_fp
        uint32_t flags
        int32_t poisoned
        int64_t cap_orders, otab_size, cap_claims, cap_bene, btab_size, ptab_size
        int64_t cap_arena, cap_red, rtab_size
        int64_t n_regions, heap_total, n_prizes
        int64_t off[32]
        int64_t n_orders, n_claims, n_bene, n_pairs, n_red, arena_used, awarded_points
        int64_t outcomes[18]
        int64_t wal_gen, wal_bytes, wal_seq
        int64_t pos_parts
        int64_t pos_off[64]
        int64_t pos_line[64]
        int64_t pos_crc[64]
        int32_t pids[128]
        uint64_t lock_acquired, lock_contended, lock_wait_ns, lock_held_ns
        pthread_mutex_t mutex
    int rc_mutex_init(pthread_mutex_t *m) nogil
    int rc_lock(rc_shm_header *h, uint64_t *t_locked) nogil
    int rc_unlock(rc_shm_header *h, uint64_t t_locked) nogil
    int rc_mutex_consistent(rc_shm_header *h) nogil
    void rc_set_ready(rc_shm_header *h) nogil
    uint32_t rc_is_ready(rc_shm_header *h) nogil


cdef extern from "shm_route.h":
    enum:
        RC_ROUTE_NONE
        RC_ROUTE_FOUND
        RC_ROUTE_SLOW
    int rc_json_order_id(const char *p, const char *end, const char **s, size_t *n) nogil


ctypedef struct ShmRec:
    int kind
    int32_t static_outcome   # window / region / min-paid outcome decided in pass one, or -1
    uint64_t fp              # order id (redemption id for a redeem) fingerprint
    uint32_t fp2
    uint64_t wfp             # beneficiary fingerprint (placed)
    uint32_t wfp2
    Py_ssize_t row           # region row, -1 when not a reward region
    int64_t paid
    int64_t ts
    PyObject *order          # order id (redemption id for a redeem)
    PyObject *who
    PyObject *event


cdef class ShmCore:
    # campaign settings
    cdef object campaign
    cdef int64_t starts, ends, min_paid, budget, cap, region_cap
    cdef bint releases, settle_placed, pays_merchant
    cdef Py_ssize_t n_regions
    cdef cnp.ndarray a_rkeys, a_rvals, a_codes, a_slots, a_tier_off, a_tier_upto, a_tier_points
    cdef cnp.ndarray a_heap_off
    cdef int64_t *rkeys
    cdef int32_t *rvals
    cdef uint64_t rmask
    cdef int64_t *codes
    cdef int32_t *slots
    cdef int32_t *tier_off
    cdef int32_t *tier_upto
    cdef int32_t *tier_points
    cdef int64_t *heap_off
    cdef dict prize_index
    cdef list prize_costs
    # the segment
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef rc_shm_header *h
    cdef int32_t *used
    cdef int32_t *taken
    cdef int32_t *heap_len
    cdef int32_t *heap
    cdef rc_fpslot *orders
    cdef uint64_t omask
    cdef rc_fpslot *btab
    cdef uint64_t bmask
    cdef int32_t *held
    cdef int64_t *pending
    cdef int64_t *confirmed
    cdef int64_t *redeemed
    cdef int64_t *bname_off
    cdef int32_t *bname_len
    cdef int64_t *pkeys
    cdef int32_t *pvals
    cdef uint64_t pmask
    cdef int32_t *c_row
    cdef int32_t *c_slot
    cdef int32_t *c_points
    cdef int32_t *c_bene
    cdef uint8_t *c_state
    cdef int64_t *c_ts
    cdef int64_t *c_ooff
    cdef int32_t *c_olen
    cdef rc_fpslot *rtab
    cdef uint64_t rtmask
    cdef int32_t *r_outcome
    cdef int64_t *r_cost
    cdef int64_t *r_idoff
    cdef int32_t *r_idlen
    cdef int64_t *stock
    cdef uint8_t *arena
    # lock state of this process
    cdef bint locked
    cdef uint64_t t_locked
    # pass one scratch and what the prepared batch may need
    cdef cnp.ndarray a_recs
    cdef ShmRec *recs
    cdef Py_ssize_t n_prepared
    cdef Py_ssize_t need_orders, need_placed, need_redeem, need_arena
