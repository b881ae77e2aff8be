/* CRC-32C (Castagnoli) of the replay input, for resume positions.
 *
 * Every worker of `rewardcore replay --workers N` checksums the whole input as it scans it,
 * so the checksum is on the hot path: the SSE4.2 crc32 instruction does 8 bytes a step
 * (several GB/s), a table-free bitwise loop stands in where the CPU lacks it. The function
 * carries its own target attribute, so the module builds with the same flags as the rest.
 */
#ifndef RC_SHM_CRC_H
#define RC_SHM_CRC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint32_t rc_crc32c_soft(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static uint32_t rc_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    uint64_t w;
    while (n >= 8) {
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

static inline uint32_t rc_crc32c(uint32_t crc, const void *data, size_t n) {
    static int hw = -1;
    if (hw < 0) hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    return hw ? rc_crc32c_hw(crc, (const uint8_t *)data, n)
              : rc_crc32c_soft(crc, (const uint8_t *)data, n);
}
#else
static inline uint32_t rc_crc32c(uint32_t crc, const void *data, size_t n) {
    return rc_crc32c_soft(crc, (const uint8_t *)data, n);
}
#endif

#endif
