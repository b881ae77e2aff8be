/* Hashing and open-addressing tables shared by the compiled engines.
 *
 * Order ids and beneficiaries are remembered as 96-bit fingerprints (16 bytes a slot with
 * the value), not as strings: that is what keeps a remembered order under 32 bytes, and what
 * spares a cache miss on a stored string per event. Two distinct ids collide with
 * probability about n^2 / 2^97 (6e-16 at 10 million). Claims keep the real strings for
 * export. The hash is deterministic across processes (no random seed) so state can be
 * shared and written to disk.
 */
#ifndef RC_TABLES_H
#define RC_TABLES_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t fp;    /* fingerprint, low 64 bits; also picks the bucket */
    uint32_t fp2;   /* fingerprint, 32 more bits */
    int32_t val;    /* 0 = empty; meaning of other values is the caller's */
} rc_fpslot;

static inline uint64_t rc_mum(uint64_t a, uint64_t b) {
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)(r >> 64) ^ (uint64_t)r;
}

static inline uint64_t rc_fmix64(uint64_t k) {
    k ^= k >> 33; k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* Two multiply-fold lanes over the bytes; `kind` separates equal bytes of str kinds. */
static inline void rc_hash_bytes(const void *data, size_t n, uint32_t kind,
                                 uint64_t *lo, uint32_t *hi) {
    const uint8_t *s = (const uint8_t *)data;
    uint64_t a = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)n << 3) ^ kind;
    uint64_t b = 0xD6E8FEB86659FD93ULL ^ ((uint64_t)n << 17) ^ ((uint64_t)kind << 40);
    uint64_t w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        a = rc_mum(a ^ w, 0xA0761D6478BD642FULL);
        b = rc_mum(b + w, 0xE7037ED1A0B428DBULL);
        s += 8; n -= 8;
    }
    if (n) {
        /* the tail, byte by byte: a variable-length memcpy would be a libc call */
        w = 0;
        switch (n) {
        case 7: w |= (uint64_t)s[6] << 48; /* fall through */
        case 6: w |= (uint64_t)s[5] << 40; /* fall through */
        case 5: w |= (uint64_t)s[4] << 32; /* fall through */
        case 4: w |= (uint64_t)s[3] << 24; /* fall through */
        case 3: w |= (uint64_t)s[2] << 16; /* fall through */
        case 2: w |= (uint64_t)s[1] << 8;  /* fall through */
        case 1: w |= (uint64_t)s[0];
        }
        a = rc_mum(a ^ w, 0xA0761D6478BD642FULL);
        b = rc_mum(b + w, 0xE7037ED1A0B428DBULL);
    }
    a = rc_mum(a ^ (a >> 29), 0x8EBC6AF09C88C6E3ULL);
    b = rc_mum(b ^ a, 0x589965CC75374CC3ULL);
    *lo = a;
    *hi = (uint32_t)(b >> 32) ^ (uint32_t)b;
}

static inline void rc_prefetch(const void *p) { __builtin_prefetch(p, 1, 1); }

/* Index of the slot holding (fp, fp2), or of the empty slot where it would go. */
static inline uint64_t rc_fp_probe(const rc_fpslot *t, uint64_t mask, uint64_t fp, uint32_t fp2) {
    uint64_t i = fp & mask;
    while (t[i].val != 0 && (t[i].fp != fp || t[i].fp2 != fp2)) i = (i + 1) & mask;
    return i;
}

/* Exact-keyed fingerprint-slot table whose bucket comes from a separate hash `h`, so the
 * bucket can be computed (and prefetched) before the key is known. */
static inline uint64_t rc_keyed_probe(const rc_fpslot *t, uint64_t mask, uint64_t h, uint64_t key) {
    uint64_t i = h & mask;
    while (t[i].val != 0 && t[i].fp != key) i = (i + 1) & mask;
    return i;
}

static inline uint64_t rc_pair_hash(uint64_t who_fp, int64_t row) {
    return rc_fmix64(who_fp ^ ((uint64_t)(row + 1) * 0x9E3779B97F4A7C15ULL));
}

/* Integer-keyed table (region codes, beneficiary x region pairs): keys[i] with vals[i] != 0. */
static inline uint64_t rc_int_probe(const int64_t *keys, const int32_t *vals, uint64_t mask,
                                    int64_t key) {
    uint64_t i = rc_fmix64((uint64_t)key) & mask;
    while (vals[i] != 0 && keys[i] != key) i = (i + 1) & mask;
    return i;
}

#endif
