# cython: language_level=3
"""C declarations shared by the compiled engines (ext/engine.pyx, ext/shm.pyx) and their
common parts (ext/rc_read.pxi: pass one, ext/rc_rules.pxi: the rules)."""

from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef extern from "rc_tables.h":
    ctypedef struct rc_fpslot:
        uint64_t fp
        uint32_t fp2
        int32_t val
    void rc_hash_bytes(const void *data, size_t n, uint32_t kind, uint64_t *lo, uint32_t *hi) nogil
    uint64_t rc_fp_probe(const rc_fpslot *t, uint64_t mask, uint64_t fp, uint32_t fp2) nogil
    uint64_t rc_int_probe(const int64_t *keys, const int32_t *vals, uint64_t mask, int64_t key) nogil
    uint64_t rc_keyed_probe(const rc_fpslot *t, uint64_t mask, uint64_t h, uint64_t key) nogil
    uint64_t rc_pair_hash(uint64_t who_fp, int64_t row) nogil
    void rc_prefetch(const void *p) nogil


cdef extern from "rc_pyint.h":
    int rc_long_value(PyObject *v, long long *out) except -1
    bint rc_int_in(PyObject *v, long long lo, long long hi, long long *out) noexcept


# Outcome codes: rewardcore.outcomes.Outcome in C, generated (tools/gen_cython_constants.py).
include "rc_outcomes.pxi"


# Event kinds of pass one.
cdef enum:
    K_PLACED = 0
    K_CLOSED = 1
    K_COMPLETED = 2
    K_REDEEM = 3

# Order table values: c + 1 for an order holding claim c, else one of these.
cdef enum:
    ORDER_PLACED = -1
    ORDER_TOMBSTONE = -2     # closed before it was placed
    ORDER_COMPLETED = -3     # completed before it was placed

# Claim states, as exported (CLAIM_STATE_NAMES).
cdef enum:
    PENDING = 0
    CONFIRMED_STATE = 1
    REVOKED_STATE = 2

# One event as pass one read it.
ctypedef struct rc_rec:
    int kind
    int32_t static_outcome  # window / region / min-paid outcome decided in pass one, or -1
    uint64_t fp             # order id fingerprint (redemption id for a redeem)
    uint32_t fp2
    uint64_t wfp            # beneficiary fingerprint, when pass one hashed it
    uint32_t wfp2
    Py_ssize_t row          # the region's row, -1 when it is not a reward region
    uint64_t pair_hash      # bucket hash in the pairs table, when the per-region cap is set
    int64_t region
    int64_t paid
    int64_t ts
    int64_t qty
    PyObject *order         # order id (redemption id for a redeem)
    PyObject *who           # the beneficiary: agent or merchant per the campaign, a redeem's
    PyObject *prize
    PyObject *event
