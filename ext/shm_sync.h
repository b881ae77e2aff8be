/* The shared-memory engine's lock and segment header.
 *
 * One process-shared, robust pthread mutex in the segment guards every change: a worker
 * holds it for the second pass of one batch (the table and counter updates) while
 * decoding and hashing of the next batch go on outside it in every worker. Robust means
 * that when a holder dies (kill -9) the next locker gets EOWNERDEAD instead of hanging
 * forever; the engine then knows the state may be half-changed and says so.
 *
 * The header is plain C so every process reads the same field offsets.
 */
#ifndef RC_SHM_SYNC_H
#define RC_SHM_SYNC_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rc_outcome_count.h" /* GENERATED: RC_N_OUTCOMES, from rewardcore.outcomes */

#define RC_SHM_MAGIC 0x31304d4853435252ULL /* "RRCSHM01" */
#define RC_SHM_VERSION 2
#define RC_SHM_MAX_PIDS 128
#define RC_SHM_MAX_PARTS 64
#define RC_SHM_N_OUTCOMES RC_N_OUTCOMES
#define RC_SHM_N_OFFSETS 40

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t ready;          /* 1 once the creator has laid the segment out */
    uint64_t total_size;
    uint64_t campaign_fp;    /* the campaign every attached process must load */
    uint32_t flags;          /* RC_SHM_TRANSIENT, RC_SHM_DURABLE */
    int32_t poisoned;        /* a holder died mid-batch: the state may be half-changed */
    /* capacities, fixed at creation */
    int64_t cap_orders, otab_size, cap_claims, cap_bene, btab_size, ptab_size;
    int64_t cap_arena, cap_red, rtab_size;
    int64_t n_regions, heap_total, n_prizes;
    int64_t off[RC_SHM_N_OFFSETS];   /* byte offset of each array from the segment start */
    /* counters, changed only under the mutex */
    int64_t n_orders, n_claims, n_bene, n_pairs, n_red, arena_used, awarded_points;
    int64_t outcomes[RC_SHM_N_OUTCOMES];
    /* durable mode: generation and size of the log that matches this state */
    int64_t wal_gen, wal_bytes, wal_seq;
    /* input positions of `rewardcore replay` (resume after a crash), per partition */
    int64_t pos_parts;
    int64_t pos_off[RC_SHM_MAX_PARTS];
    int64_t pos_line[RC_SHM_MAX_PARTS];
    int64_t pos_crc[RC_SHM_MAX_PARTS];
    /* attached processes (0 = free entry) */
    int32_t pids[RC_SHM_MAX_PIDS];
    /* lock statistics */
    uint64_t lock_acquired, lock_contended, lock_wait_ns, lock_held_ns;
    /* the fingerprint of a fixed string: a build that hashes differently must not attach */
    uint64_t hash_lo;
    uint32_t hash_hi;
    uint32_t spare;
    pthread_mutex_t mutex __attribute__((aligned(64)));
} rc_shm_header;

#define RC_SHM_TRANSIENT 1u  /* removed when the last attached process closes it */
#define RC_SHM_DURABLE 2u    /* every batch is logged to a directory first */
#define RC_SHM_SPARSE 4u     /* pages are not reserved: zero by punching holes */

static inline uint64_t rc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* 0 or an errno value. */
static inline int rc_mutex_init(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc) return rc;
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

/* Lock, counting contention and wait time in the header. Returns 0, EOWNERDEAD (the lock
 * is now held and the caller must decide about the state), or another errno value. */
static inline int rc_lock(rc_shm_header *h, uint64_t *t_locked) {
    int rc = pthread_mutex_trylock(&h->mutex);
    uint64_t t0 = 0;
    int contended = 0;
    if (rc == EBUSY) {
        contended = 1;
        t0 = rc_now_ns();
        rc = pthread_mutex_lock(&h->mutex);
    }
    if (rc != 0 && rc != EOWNERDEAD) return rc;
    *t_locked = rc_now_ns();
    h->lock_acquired++;
    if (contended) {
        h->lock_contended++;
        h->lock_wait_ns += *t_locked - t0;
    }
    return rc;
}

static inline int rc_unlock(rc_shm_header *h, uint64_t t_locked) {
    h->lock_held_ns += rc_now_ns() - t_locked;
    return pthread_mutex_unlock(&h->mutex);
}

static inline int rc_mutex_consistent(rc_shm_header *h) {
    return pthread_mutex_consistent(&h->mutex);
}

/* Release store / acquire load of the ready flag, so an attacher that sees ready = 1
 * also sees the whole layout the creator wrote before it. */
static inline void rc_set_ready(rc_shm_header *h) { __atomic_store_n(&h->ready, 1u, __ATOMIC_RELEASE); }
static inline uint32_t rc_is_ready(rc_shm_header *h) { return __atomic_load_n(&h->ready, __ATOMIC_ACQUIRE); }

#endif
