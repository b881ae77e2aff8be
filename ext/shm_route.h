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

/* Whether `"order_id"` appears in [p, end) (line starts at `line`): each '_' is looked at,
 * cheaper than a general substring search on lines that hold few of them. */
static inline int rc_order_key_after(const char *line, const char *p, const char *end) {
    while (p < end) {
        const char *u = (const char *)memchr(p, '_', (size_t)(end - p));
        if (u == NULL) return 0;
        if (u - 6 >= line && end - u >= 4 && memcmp(u - 6, "\"order", 6) == 0 &&
            memcmp(u + 1, "id\"", 3) == 0)
            return 1;
        p = u + 1;
    }
    return 0;
}

#define RC_ROUTE_NONE 0   /* no order id: partition 0 */
#define RC_ROUTE_FOUND 1  /* [*s, *s + *n) are the order id's UTF-8 bytes */
#define RC_ROUTE_SLOW 2   /* decode the line to be sure */

static inline int rc_order_value(const char *line, const char *v, const char *end,
                                 const char **s, size_t *n) {
    /* v: the first byte of the order id's string; finish it and check the rest of the line */
    const char *q = (const char *)memchr(v, '"', (size_t)(end - v));
    if (q == NULL) return RC_ROUTE_NONE;
    /* A backslash anywhere after the key (an escaped id, or a key that could decode to a
     * second "order_id"), or a second plain "order_id" (JSON decoders keep the last one):
     * decode such a line to be sure. */
    if (memchr(v, '\\', (size_t)(end - v)) != NULL || rc_order_key_after(line, q, end))
        return RC_ROUTE_SLOW;
    *s = v;
    *n = (size_t)(q - v);
    return RC_ROUTE_FOUND;
}

/* The usual producers write a fixed key order; these prefixes skip the tokenizer. */
static const char rc_pfx_placed[] = "{\"type\":\"placed\",\"order_id\":\"";
static const char rc_pfx_closed[] = "{\"type\":\"closed\",\"order_id\":\"";
static const char rc_pfx_completed[] = "{\"type\":\"completed\",\"order_id\":\"";

static inline int rc_json_order_id(const char *p, const char *end, const char **s, size_t *n) {
    static const char key[] = "order_id";
    const char *line = p;
    size_t len = (size_t)(end - p);
    if (len > sizeof(rc_pfx_completed) && p[0] == '{' && p[9] == 'p' &&
        memcmp(p, rc_pfx_placed, sizeof(rc_pfx_placed) - 1) == 0)
        return rc_order_value(line, p + sizeof(rc_pfx_placed) - 1, end, s, n);
    if (len > sizeof(rc_pfx_completed) && p[0] == '{' && p[9] == 'c') {
        if (memcmp(p, rc_pfx_closed, sizeof(rc_pfx_closed) - 1) == 0)
            return rc_order_value(line, p + sizeof(rc_pfx_closed) - 1, end, s, n);
        if (memcmp(p, rc_pfx_completed, sizeof(rc_pfx_completed) - 1) == 0)
            return rc_order_value(line, p + sizeof(rc_pfx_completed) - 1, end, s, n);
    }
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
            if (p >= end || *p != '"') return RC_ROUTE_SLOW;
            return rc_order_value(line, p + 1, end, s, n);
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
