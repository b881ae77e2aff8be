/* Counting the colons of a JSON-lines batch, line by line, in one pass.
 *
 * The codec's fast path proves a decoded batch has no duplicate key and nothing nested by
 * counting: an event whose line has exactly as many ':' as its required keys has no other
 * key. A redeem may give its optional qty: one colon more, and then a `"qty":` key right
 * after a `{` or `,` (that quote is a string's opening one, so the key is real; a spelling
 * with whitespace or escapes is simply not recognised and the batch is checked event by
 * event instead).
 *
 * Lines and events are one to one when every non-empty line starts with `{` and ends with
 * `}` and there are as many such lines as events: a `}` right before a newline, followed by
 * a `{`, can only sit between two top-level values of valid JSON (a string cannot hold a raw
 * newline, and inside an object or array a `,` would have to come between them), so each
 * line holds whole events, at least one, and as many lines as events makes it one each.
 */
#ifndef RC_JSON_TALLY_H
#define RC_JSON_TALLY_H

#include <stddef.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* keys[i] of an event: its required keys, with this bit when it may give qty */
#define RC_MAY_GIVE_QTY 0x80

typedef struct {
    size_t colons;    /* ':' in the whole buffer */
    size_t newlines;  /* '\n' in the whole buffer */
    int lined;        /* lines and events one to one, each line plain for its event */
    /* the pass so far */
    size_t line_start, event;
} rc_json_tally_t;

/* Exactly one `"qty":` key at the top of a line known to hold one event. */
static inline int rc_one_qty_key(const unsigned char *p, size_t n) {
    const unsigned char *at = p, *end = p + n, *c;
    int found = 0;
    while ((c = memchr(at, ':', (size_t)(end - at))) != NULL) {
        if (c - p >= 6 && memcmp(c - 5, "\"qty\"", 5) == 0 && (c[-6] == ',' || c[-6] == '{'))
            found++;
        at = c + 1;
    }
    return found == 1;
}

/* The line from t->line_start to `end` (its newline, or the buffer's end), which holds
 * `colons` ':', is over. */
static inline void rc_json_line_end(rc_json_tally_t *t, const unsigned char *p, size_t end,
                                    size_t colons, const unsigned char *keys, size_t events) {
    size_t start = t->line_start;
    t->colons += colons;
    t->line_start = end + 1;
    if (end == start || !t->lined)
        return;  /* a blank line: msgspec skips it too */
    if (t->event >= events || p[start] != '{' || p[end - 1] != '}') {
        t->lined = 0;
        return;
    }
    unsigned k = keys[t->event++], need = k & ~RC_MAY_GIVE_QTY;
    if (colons == need)
        return;
    if (!(k & RC_MAY_GIVE_QTY) || colons != need + 1 || !rc_one_qty_key(p + start, end - start))
        t->lined = 0;
}

#ifdef __SSE2__
/* set bits of a byte: a table, as the baseline x86-64 build has no popcount instruction */
static const unsigned char rc_bits8[256] = {
#define RC_B2(n) n, n + 1, n + 1, n + 2
#define RC_B4(n) RC_B2(n), RC_B2(n + 1), RC_B2(n + 1), RC_B2(n + 2)
#define RC_B6(n) RC_B4(n), RC_B4(n + 1), RC_B4(n + 1), RC_B4(n + 2)
    RC_B6(0), RC_B6(1), RC_B6(1), RC_B6(2)
#undef RC_B2
#undef RC_B4
#undef RC_B6
};

static inline unsigned rc_bits16(unsigned m) { return rc_bits8[m & 0xFF] + rc_bits8[m >> 8]; }
#endif

/* Tally p[0:n]. `keys` (one per event, `events` of them) may be NULL: colons and newlines
 * only, and `lined` is 0. */
static void rc_json_tally(const unsigned char *p, size_t n, const unsigned char *keys,
                          size_t events, rc_json_tally_t *t) {
    size_t i = 0, colons = 0;  /* colons: of the line so far */
    memset(t, 0, sizeof *t);
    t->lined = keys != NULL;
#ifdef __SSE2__
    /* 16 bytes at a time: a chunk's colons counted at once, its newlines (few) one by one */
    const __m128i colon = _mm_set1_epi8(':'), newline = _mm_set1_epi8('\n');
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(p + i));
        unsigned cm = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, colon));
        unsigned nl = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, newline));
        while (nl) {
            unsigned bit = (unsigned)__builtin_ctz(nl), before = (1u << bit) - 1;
            nl &= nl - 1;
            colons += rc_bits16(cm & before);
            cm &= ~before;
            t->newlines++;
            rc_json_line_end(t, p, i + bit, colons, keys, events);
            colons = 0;
        }
        colons += rc_bits16(cm);
    }
#endif
    for (; i < n; i++) {
        if (p[i] == ':') {
            colons++;
        } else if (p[i] == '\n') {
            t->newlines++;
            rc_json_line_end(t, p, i, colons, keys, events);
            colons = 0;
        }
    }
    if (t->line_start < n)
        rc_json_line_end(t, p, n, colons, keys, events);  /* the last line, without its newline */
    else
        t->colons += colons;
    if (t->event != events)
        t->lined = 0;
}

#endif
