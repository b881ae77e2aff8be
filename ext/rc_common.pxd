# cython: language_level=3
"""C declarations shared by the compiled engines (ext/engine.pyx, ext/shm.pyx)."""

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


# Outcome codes: rewardcore.outcomes.Outcome in C (append, never renumber; tests check both
# compiled modules' OUTCOME_CODES against the Python enum).
cdef enum:
    AWARDED = 0
    DUPLICATE = 1
    CLOSED = 2
    OUTSIDE_WINDOW = 3
    NO_REWARD_REGION = 4
    BELOW_MIN_PAID = 5
    BENEFICIARY_CAP = 6
    BENEFICIARY_REGION_CAP = 7
    SOLD_OUT = 8
    BUDGET_EXHAUSTED = 9
    REVOKED = 10
    TOMBSTONED = 11
    CONFIRMED = 12
    UNCHANGED = 13
    REDEEMED = 14
    UNKNOWN_PRIZE = 15
    INSUFFICIENT_POINTS = 16
    OUT_OF_STOCK = 17
    N_OUTCOMES = 18
