# cython: language_level=3
"""Declarations of the shared-memory claim engine (ext/shm.pyx)."""

from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cimport numpy as cnp


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
        RC_SHM_SPARSE
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
        int64_t off[40]
        int64_t n_orders, n_claims, n_bene, n_pairs, n_red, arena_used, awarded_points
        int64_t outcomes[18]
        int64_t wal_gen, wal_bytes, wal_seq
        int64_t pos_parts
        int64_t pos_off[64]
        int64_t pos_line[64]
        int64_t pos_crc[64]
        int32_t pids[128]
        uint64_t lock_acquired, lock_contended, lock_wait_ns, lock_held_ns
        uint64_t hash_lo
        uint32_t hash_hi
        pthread_mutex_t mutex
    int rc_mutex_init(pthread_mutex_t *m) nogil
    int rc_lock(rc_shm_header *h, uint64_t *t_locked) nogil
    int rc_unlock(rc_shm_header *h, uint64_t t_locked) nogil
    int rc_mutex_consistent(rc_shm_header *h) nogil
    void rc_set_ready(rc_shm_header *h) nogil
    uint32_t rc_is_ready(rc_shm_header *h) nogil
