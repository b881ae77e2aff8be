# cython: language_level=3
"""The Redis client's per-event work, compiled: checking the batch (the memory engine's pass
one, ext/rc_read.pxi), grouping its events by order bucket into the bucket step's items,
turning the buckets' replies into the core step's items, and filling Decisions.

The Python client (rewardcore/backends/redis.py) does the same in plain Python when this
module is missing; both send exactly the same bytes (tests compare them).
"""

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cimport numpy as cnp
import numpy as np

cnp.import_array()

from rc_common cimport *  # ext/rc_common.pxd: hash tables, int reads, outcome codes

include "rc_read.pxi"  # pass one: reading and checking event fields

from rewardcore import _redis_wire as W

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.string cimport memcpy

cdef int BUCKET_PLACED = W.BUCKET_PLACED
cdef int BUCKET_CLOSED = W.BUCKET_CLOSED
cdef int BUCKET_COMPLETED = W.BUCKET_COMPLETED
cdef int CORE_PLACED = W.CORE_PLACED
cdef int CORE_PLACED_AGAIN = W.CORE_PLACED_AGAIN
cdef int CORE_CLOSED = W.CORE_CLOSED
cdef int CORE_COMPLETED = W.CORE_COMPLETED
cdef int CORE_REDEEM = W.CORE_REDEEM
cdef int NEW_CANDIDATE = W.NEW_CANDIDATE

cdef uint32_t CRC_TABLE[256]


cdef void _crc_init() noexcept:
    cdef uint32_t c
    cdef int n, k
    for n in range(256):
        c = <uint32_t> n
        for k in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if (c & 1) else (c >> 1)
        CRC_TABLE[n] = c


_crc_init()


cdef inline uint32_t _crc32(const unsigned char *p, Py_ssize_t n) noexcept:
    """zlib.crc32 (the bucket of an order id is crc32(utf-8) mod buckets, in every client)."""
    cdef uint32_t c = 0xFFFFFFFF
    cdef Py_ssize_t i
    for i in range(n):
        c = CRC_TABLE[(c ^ p[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


cdef inline object _ts(int64_t ts):
    # text: the core only stores a ts, and text needs no number formatting in Lua
    return str(ts)


def check_batch(list events, bint pays_merchant):
    """Raise EventError (the Python check's words) for the first invalid event."""
    cdef rc_rec r
    cdef Py_ssize_t i
    for i in range(len(events)):
        if not rc_read(<PyObject *> events[i], &r, pays_merchant):
            rc_refuse(events, i)


def bucket_items(list events, Py_ssize_t lo, Py_ssize_t hi, int nb, int64_t starts,
                 int64_t ends, int64_t min_paid, dict regions, bint pays_merchant):
    """The bucket step's items of events[lo:hi]: (per bucket a flat list kind, order id,
    argument; per event its bucket (-1 for a redemption) and its place in that bucket)."""
    cdef list args = [[] for _ in range(nb)]
    cdef cnp.ndarray[int32_t] bucket = np.empty(hi - lo, np.int32)
    cdef cnp.ndarray[int32_t] pos = np.empty(hi - lo, np.int32)
    cdef rc_rec r
    cdef Py_ssize_t i, n
    cdef const char *u
    cdef int b, kind
    cdef list a
    cdef object arg
    for i in range(lo, hi):
        if not rc_read(<PyObject *> events[i], &r, pays_merchant):
            rc_refuse(events, i)
        if r.kind == K_REDEEM:
            bucket[i - lo] = -1
            pos[i - lo] = 0
            continue
        if r.kind == K_PLACED:
            kind = BUCKET_PLACED
            if not starts <= r.ts < ends:
                arg = OUTSIDE_WINDOW
            elif <object> _field(r.event, OFF_P_REGION) not in regions:
                arg = NO_REWARD_REGION
            elif r.paid < min_paid:
                arg = BELOW_MIN_PAID
            else:
                arg = NEW_CANDIDATE
        elif r.kind == K_CLOSED:
            kind, arg = BUCKET_CLOSED, 0
        else:
            kind, arg = BUCKET_COMPLETED, str(r.ts)
        order = <object> r.order
        u = PyUnicode_AsUTF8AndSize(order, &n)
        b = _crc32(<const unsigned char *> u, n) % nb
        a = <list> args[b]
        bucket[i - lo] = b
        pos[i - lo] = len(a) // 3
        a.append(kind)
        a.append(order)
        a.append(arg)
    return args, bucket, pos


cdef Py_ssize_t _put_candidate_ids(bytearray ids, object order, int64_t ts) except -1:
    """Append a new candidate's order id and ts as the core reads them (W.CANDIDATE_IDS: the
    id's UTF-8 length, uint32 little-endian, its bytes, the ts text's length, the text) and
    return where they start (1-based, as Lua counts)."""
    cdef Py_ssize_t n, at = PyByteArray_GET_SIZE(ids)
    cdef const char *u = PyUnicode_AsUTF8AndSize(order, &n)
    cdef char digits[24]
    cdef int m = 0, k
    cdef uint64_t v = (<uint64_t> 0) - <uint64_t> ts if ts < 0 else <uint64_t> ts
    while True:  # the decimal digits, last first
        digits[m] = <char> (48 + v % 10)
        m += 1
        v //= 10
        if v == 0:
            break
    if ts < 0:
        digits[m] = b"-"[0]
        m += 1
    PyByteArray_Resize(ids, at + 5 + n + m)
    cdef char *p = PyByteArray_AS_STRING(ids) + at
    p[0] = <char> (n & 0xFF)
    p[1] = <char> ((n >> 8) & 0xFF)
    p[2] = <char> ((n >> 16) & 0xFF)
    p[3] = <char> ((n >> 24) & 0xFF)
    memcpy(p + 4, u, n)
    p[4 + n] = <char> m
    for k in range(m):
        p[5 + n + k] = digits[m - 1 - k]
    return at + 1


cdef inline int _who_index(dict whos, object who):
    cdef object j = whos.get(who)
    if j is None:
        j = whos[who] = len(whos) + 1
    return j


def core_items(list events, Py_ssize_t lo, cnp.ndarray[int32_t] bucket,
               cnp.ndarray[int32_t] pos, list replies, dict regions, dict prizes,
               bint pays_merchant, cnp.ndarray[uint8_t] outcome):
    """The core step's items, in the batch's order, from the buckets' replies (`replies[b]`
    is bucket b's reply or None). Final outcomes go straight into `outcome`. Returns
    ((items, beneficiaries, candidate ids, places of the items other than new candidates),
    rows: per item its event row or -1 when the event's answer is already final, the
    regions the items name: code, index, slots, tiers, 4 per region)."""
    cdef list items = []
    cdef dict whos = {}
    cdef bytearray ids = bytearray()
    cdef list rare = []
    cdef list rows = []
    cdef dict reg_index = {}
    cdef list reg_flat = []
    cdef Py_ssize_t i, j, n = bucket.shape[0]
    cdef int b
    cdef rc_rec r
    cdef object reply, region, ri, ev
    for j in range(n):
        i = lo + j
        ev = events[i]
        rc_read(<PyObject *> ev, &r, pays_merchant)  # checked in the bucket pass
        b = bucket[j]
        if b < 0:
            prize = prizes.get(<object> r.prize)
            rare.append(len(items) + 1)
            items += (CORE_REDEEM, <object> r.order, _who_index(whos, <object> r.who),
                      <object> r.prize, r.qty,
                      prize[0] if prize is not None else -1,
                      prize[1] if prize is not None else 0)
            rows.append(i)
            continue
        reply = (<list> replies[b])[pos[j]]
        if type(reply) is int:
            if reply == NEW_CANDIDATE:
                region = <object> _field(r.event, OFF_P_REGION)
                ri = reg_index.get(region)
                if ri is None:
                    ri = reg_index[region] = len(reg_index) + 1
                    reg_flat.extend(regions[region])
                items.append(CORE_PLACED)
                items.append(_who_index(whos, <object> r.who))
                items.append(ri)
                items.append(_put_candidate_ids(ids, <object> r.order, r.ts))
                rows.append(i)
            else:
                outcome[i] = <uint8_t> reply
            continue
        head = reply[0]
        if head == "Q" or head == "N":
            region = <object> _field(r.event, OFF_P_REGION)
            if head == "Q" and region not in regions:
                outcome[i] = DUPLICATE  # a redelivery unlike its first delivery
                continue
            ri = reg_index.get(region)
            if ri is None:
                ri = reg_index[region] = len(reg_index) + 1
                reg_flat.extend(regions[region])
            if head == "N":
                ref, early = "", reply[1:]
                rows.append(i)
            else:
                ref, _, early = reply[1:].partition("=")
                outcome[i] = DUPLICATE
                rows.append(-1)
            rare.append(len(items) + 1)
            items += (CORE_PLACED_AGAIN, <object> r.order, _who_index(whos, <object> r.who),
                      ri, _ts(r.ts), early, ref)
        else:  # "C<ref>": closed / completed of an order the core decides
            rare.append(len(items) + 1)
            items += (CORE_CLOSED if r.kind == K_CLOSED else CORE_COMPLETED, <object> r.order,
                      _ts(r.ts), reply[1:])
            rows.append(i)
    return (items, list(whos), bytes(ids), rare), rows, reg_flat


def fill(list reply, list rows, cnp.ndarray[uint8_t] outcome, cnp.ndarray[int32_t] slot,
         cnp.ndarray[int32_t] points, cnp.ndarray rank):
    """Decisions from the core's reply: 4 values per item (outcome, slot, points, rank)."""
    cdef Py_ssize_t j, i, x
    cdef cnp.ndarray[int64_t] rk
    cdef bint has_rank = rank is not None
    if has_rank:
        rk = rank
    for j in range(len(rows)):
        i = rows[j]
        if i < 0:
            continue
        x = 4 * j
        outcome[i] = reply[x]
        slot[i] = reply[x + 1]
        points[i] = reply[x + 2]
        if has_rank:
            rk[i] = reply[x + 3]
