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


# Outcome codes: rewardcore.outcomes.Outcome in C, generated (tools/gen_cython_constants.py).
include "rc_outcomes.pxi"
