# cython: language_level=3
"""Scanning JSON-lines input (the codec, the CLI's replay, the durable log): the colon tally
of a decoded batch, routing lines to workers by order id, finding line ends, CRC-32C
checksums, the hash probe saved state records. Its own small module, importing nothing of
rewardcore: the codec, the durable code and the shared-memory engine all use it."""

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

from rc_common cimport rc_hash_bytes


cdef extern from "shm_route.h":
    enum:
        RC_ROUTE_NONE
        RC_ROUTE_FOUND
        RC_ROUTE_SLOW
    int rc_json_order_id(const char *p, const char *end, const char **s, size_t *n) nogil


cdef extern from "json_tally.h":
    enum:
        RC_MAY_GIVE_QTY
    ctypedef struct rc_json_tally_t:
        size_t colons
        size_t newlines
        int lined
    void rc_json_tally(const unsigned char *p, size_t n, const unsigned char *keys,
                       size_t events, rc_json_tally_t *t) nogil


cdef extern from "shm_crc.h":
    uint32_t rc_crc32c(uint32_t crc, const void *data, size_t n) nogil


# -- the colon tally of a decoded JSON batch ----------------------------------------------
cdef extern from "Python.h":
    PyTypeObject *type_of "Py_TYPE"(PyObject *o) nogil  # a borrowed reference, no count


cdef enum:
    MAX_KINDS = 8

#: the flag of a kind that may give one optional `qty` key besides its required ones
MAY_GIVE_QTY = RC_MAY_GIVE_QTY


def json_plain(const uint8_t[::1] data, list events, tuple kinds, const uint8_t[::1] kind_keys,
               bint by_line):
    """(plain, newlines) of a batch that decoded to `events`, every one of a type in `kinds`.

    `kind_keys[k]` is the number of keys an event of `kinds[k]` must have, plus
    MAY_GIVE_QTY when it may give one optional `qty` besides. Plain: the batch's ':' are
    exactly its events' keys, or (`by_line`, for JSON lines) each line has its own event's,
    or one more that is a `"qty":` key (ext/json_tally.h says why a line is then one event).
    Unsure is not plain.
    """
    cdef Py_ssize_t n = data.shape[0], count = PyList_GET_SIZE(events)
    cdef Py_ssize_t nk = len(kinds), i, k
    cdef PyTypeObject *types[MAX_KINDS]
    cdef PyTypeObject *t
    cdef uint8_t *keys = NULL
    cdef size_t expected = 0
    cdef bint known = True, plain
    cdef rc_json_tally_t tally
    if nk > MAX_KINDS or kind_keys.shape[0] != nk:
        raise ValueError(f"kinds: at most {MAX_KINDS}, one key count each")
    for k in range(nk):
        types[k] = <PyTypeObject *> kinds[k]
    if count:
        keys = <uint8_t *> PyMem_Malloc(count)
        if keys == NULL:
            raise MemoryError()
    try:
        for i in range(count):
            t = type_of(PyList_GET_ITEM(events, i))
            k = 0
            while k < nk and types[k] != t:  # the most frequent kind first
                k += 1
            if k == nk:
                known = False
                break
            keys[i] = kind_keys[k]
            expected += kind_keys[k] & ~RC_MAY_GIVE_QTY
        rc_json_tally(<const unsigned char *> &data[0] if n else <const unsigned char *> b"",
                      n, keys if by_line and known else NULL, count, &tally)
    finally:
        PyMem_Free(keys)
    plain = known and (tally.colons == expected or tally.lined)
    return plain, tally.newlines


# -- routing lines of a JSON-lines input to workers -------------------------------------
def route(const uint8_t[::1] data, Py_ssize_t start, Py_ssize_t limit, int parts,
          int workers, int worker, const int64_t[::1] skip, bytearray out,
          int64_t[::1] offsets, int64_t[::1] lines, slow):
    """Scan whole lines from `start` until `len(offsets)` are selected or `limit` is reached.

    A line belongs to partition hash(order_id) % parts (0 when it has none) and the
    partition to worker partition % workers; a line is selected when it is this worker's
    and starts at or after skip[partition] (the part of the input already applied). The
    selected lines are copied into `out`, each ending in a newline; their offsets go to
    `offsets` and their line indexes (relative to `start`) to `lines`. `limit` must be the
    end of the data or a point after which a line may be cut. `slow(line) -> partition`
    answers for lines the scanner cannot route alone.

    Returns (end, lines scanned, lines selected, bytes used in out).
    """
    cdef Py_ssize_t n = data.shape[0]
    cdef const char *base = <const char *> &data[0] if n else NULL
    cdef Py_ssize_t pos = start
    cdef Py_ssize_t line_end, nxt, used = 0, scanned = 0, selected = 0
    cdef Py_ssize_t room = len(out)
    cdef Py_ssize_t target = min(offsets.shape[0], lines.shape[0])
    cdef const char *nl
    cdef const char *s
    cdef size_t sn
    cdef uint64_t lo
    cdef uint32_t hi
    cdef int rc, part
    cdef bint at_data_end = limit >= n
    cdef char *dst = out
    if limit > n:
        limit = n
    while pos < limit and selected < target:
        nl = <const char *> memchr(base + pos, b'\n', limit - pos)
        if nl == NULL:
            if not at_data_end:
                break  # a cut line: the next call starts here
            line_end = limit
            nxt = limit
        else:
            line_end = nl - base
            nxt = line_end + 1
        if parts <= 1:
            part = 0
        else:
            rc = rc_json_order_id(base + pos, base + line_end, &s, &sn)
            if rc == RC_ROUTE_FOUND:
                rc_hash_bytes(s, sn, 0, &lo, &hi)
                part = <int> (((lo >> 32) * <uint64_t> parts) >> 32)
            elif rc == RC_ROUTE_SLOW:
                part = slow((base + pos)[:line_end - pos])
            else:
                part = 0
        if part % workers == worker and pos >= skip[part]:
            if used + (line_end - pos) + 1 > room:
                break  # out is full; the caller gives a larger buffer next time
            memcpy(dst + used, base + pos, line_end - pos)
            used += line_end - pos
            dst[used] = b'\n'
            used += 1
            offsets[selected] = pos
            lines[selected] = scanned
            selected += 1
        scanned += 1
        pos = nxt
    return pos, scanned, selected, used


def lines_end(const uint8_t[::1] data, Py_ssize_t start, Py_ssize_t limit, Py_ssize_t target):
    """(end, lines): the end of the first `target` whole lines from `start`, or of the last
    whole line before `limit` (the data's end counts as a line end)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef const char *base = <const char *> &data[0] if n else NULL
    cdef const char *nl
    cdef Py_ssize_t pos = start, lines = 0
    if limit > n:
        limit = n
    while pos < limit and lines < target:
        nl = <const char *> memchr(base + pos, b'\n', limit - pos)
        if nl == NULL:
            if limit == n:
                pos = n
                lines += 1
            break
        pos = nl - base + 1
        lines += 1
    return pos, lines


def hash_probe():
    """The fingerprint of a fixed string: saved state records it, so a build whose hash
    differs (and would not find any saved order again) refuses that state."""
    cdef uint64_t lo
    cdef uint32_t hi
    rc_hash_bytes(b"rewardcore hash probe", 21, 1, &lo, &hi)
    return f"{lo:016x}{hi:08x}"


def crc32c(const uint8_t[::1] data, uint32_t crc=0):
    """CRC-32C of `data`, continuing `crc` (the checksum of replay positions)."""
    cdef Py_ssize_t n = data.shape[0]
    if n == 0:
        return crc
    with nogil:
        crc = rc_crc32c(crc, &data[0], n)
    return crc


def route_hash(bytes order_id_utf8, int parts):
    """The partition `route` gives an order id (for the slow path and for tests)."""
    cdef uint64_t lo
    cdef uint32_t hi
    if parts <= 1:
        return 0
    rc_hash_bytes(<const char *> order_id_utf8, len(order_id_utf8), 0, &lo, &hi)
    return <int> (((lo >> 32) * <uint64_t> parts) >> 32)
