/* Routing JSON lines to workers by order id without decoding them.
 *
 * `rewardcore replay --workers N` must send every event of one order to the same worker,
 * in order. Each worker scans the whole input and keeps its own lines; decoding (the real
 * cost) then happens only on those. The scan walks the top-level keys of each line just far
 * enough to find "order_id" and hashes its raw bytes, which equal the string's UTF-8 when it
 * has no escapes. Anything unusual (escapes, a second "order_id", non-string value) is left
 * to the caller's slow path, which decodes the line as JSON; a line that does not parse goes
 * to partition 0 and becomes a dead letter there.
 */
#ifndef RC_SHM_ROUTE_H
#define RC_SHM_ROUTE_H

#include <stddef.h>
#include <string.h>

static inline const char *rc_skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* p at an opening quote; returns the position after the closing quote or NULL. Sets *esc
 * when the string holds a backslash. */
static inline const char *rc_skip_string(const char *p, const char *end, int *esc) {
    p++;
    while (p < end) {
        if (*p == '"') return p + 1;
        if (*p == '\\') {
            *esc = 1;
            p += 2;
            continue;
        }
        p++;
    }
    return NULL;
}

/* Skip one JSON value starting at p; NULL when malformed. */
static inline const char *rc_skip_value(const char *p, const char *end) {
    int esc = 0;
    if (p >= end) return NULL;
    if (*p == '"') return rc_skip_string(p, end, &esc);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = rc_skip_string(p, end, &esc);
                if (!p) return NULL;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\t' && *p != '\r') p++;
    return p;
}

#define RC_ROUTE_NONE 0   /* no order id: partition 0 */
#define RC_ROUTE_FOUND 1  /* [*s, *s + *n) are the order id's UTF-8 bytes */
#define RC_ROUTE_SLOW 2   /* decode the line to be sure */

static inline int rc_json_order_id(const char *p, const char *end, const char **s, size_t *n) {
    static const char key[] = "order_id";
    p = rc_skip_ws(p, end);
    if (p >= end || *p != '{') return RC_ROUTE_NONE;
    p++;
    for (;;) {
        int esc = 0;
        const char *k, *ke;
        p = rc_skip_ws(p, end);
        if (p >= end || *p != '"') return RC_ROUTE_NONE;
        k = p + 1;
        p = rc_skip_string(p, end, &esc);
        if (!p) return RC_ROUTE_NONE;
        if (esc) return RC_ROUTE_SLOW;
        ke = p - 1;
        p = rc_skip_ws(p, end);
        if (p >= end || *p != ':') return RC_ROUTE_NONE;
        p = rc_skip_ws(p + 1, end);
        if (ke - k == 8 && memcmp(k, key, 8) == 0) {
            const char *v;
            if (p >= end || *p != '"') return RC_ROUTE_SLOW;
            v = p + 1;
            p = rc_skip_string(p, end, &esc);
            if (!p) return RC_ROUTE_NONE;
            if (esc) return RC_ROUTE_SLOW;
            /* a repeated key: JSON decoders keep the last one */
            if (memmem(p, (size_t)(end - p), "\"order_id\"", 10) != NULL) return RC_ROUTE_SLOW;
            *s = v;
            *n = (size_t)(p - 1 - v);
            return RC_ROUTE_FOUND;
        }
        p = rc_skip_value(p, end);
        if (!p) return RC_ROUTE_NONE;
        p = rc_skip_ws(p, end);
        if (p >= end) return RC_ROUTE_NONE;
        if (*p == ',') {
            p++;
            continue;
        }
        return RC_ROUTE_NONE;
    }
}

#endif
