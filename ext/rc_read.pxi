# Pass one of both compiled engines (included by ext/engine.pyx and ext/shm.pyx): read an
# event's fields straight from the msgspec Struct (by member offset, no attribute lookup) into
# a C record and check them against rewardcore.events.FIELD_RULES, the rules the Python check
# (rewardcore.events.validate_batch) applies. A refused event is worded by the Python check
# itself (rc_refuse), so every engine names the same index and field in the same words.

from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char *name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    bint PyUnicode_CheckExact(PyObject *o)
    bint PyLong_CheckExact(PyObject *o)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject *o)
    int PyUnicode_KIND(PyObject *o)
    void *PyUnicode_DATA(PyObject *o)
    PyTypeObject *Py_TYPE(PyObject *o)

from rewardcore.errors import EventError
from rewardcore.events import FIELD_RULES, Closed, Completed, Placed, Redeem, check_event

cdef Py_ssize_t _member_offset(object cls, str name) except -1:
    """Offset of a Struct field in the instance, read from its member descriptor."""
    descr = cls.__dict__[name]
    if type(descr).__name__ != "member_descriptor":
        raise ImportError(f"{cls.__name__}.{name} is not a member descriptor; msgspec changed")
    return (<PyMemberDescrObject *> <PyObject *> descr).d_member.offset


cdef PyTypeObject *T_PLACED = <PyTypeObject *> Placed
cdef PyTypeObject *T_CLOSED = <PyTypeObject *> Closed
cdef PyTypeObject *T_COMPLETED = <PyTypeObject *> Completed
cdef PyTypeObject *T_REDEEM = <PyTypeObject *> Redeem
cdef Py_ssize_t OFF_P_ORDER = _member_offset(Placed, "order_id")
cdef Py_ssize_t OFF_P_MERCHANT = _member_offset(Placed, "merchant_id")
cdef Py_ssize_t OFF_P_AGENT = _member_offset(Placed, "agent_id")
cdef Py_ssize_t OFF_P_REGION = _member_offset(Placed, "region")
cdef Py_ssize_t OFF_P_PAID = _member_offset(Placed, "paid_cents")
cdef Py_ssize_t OFF_P_TS = _member_offset(Placed, "ts")
cdef Py_ssize_t OFF_C_ORDER = _member_offset(Closed, "order_id")
cdef Py_ssize_t OFF_C_TS = _member_offset(Closed, "ts")
cdef Py_ssize_t OFF_D_ORDER = _member_offset(Completed, "order_id")
cdef Py_ssize_t OFF_D_TS = _member_offset(Completed, "ts")
cdef Py_ssize_t OFF_R_ID = _member_offset(Redeem, "redemption_id")
cdef Py_ssize_t OFF_R_WHO = _member_offset(Redeem, "beneficiary")
cdef Py_ssize_t OFF_R_PRIZE = _member_offset(Redeem, "prize")
cdef Py_ssize_t OFF_R_TS = _member_offset(Redeem, "ts")
cdef Py_ssize_t OFF_R_QTY = _member_offset(Redeem, "qty")


def _rule(cls, str name):
    for rule in FIELD_RULES[cls]:
        if rule.name == name:
            return rule
    raise ImportError(f"{cls.__name__}.{name} has no rule in rewardcore.events.FIELD_RULES")


def _id_rule():
    """Every id field shares one rule (events.Id); pass one checks it as one pair of ints."""
    rules = {(r.min, r.max) for rs in FIELD_RULES.values() for r in rs if r.is_str}
    if len(rules) != 1:
        raise ImportError("event id fields differ in their length limits; teach rc_read.pxi")
    return rules.pop()


ID_MIN, ID_MAX = _id_rule()
cdef Py_ssize_t C_ID_MIN = ID_MIN
cdef Py_ssize_t C_ID_MAX = ID_MAX
cdef int64_t P_REGION_MIN = _rule(Placed, "region").min
cdef int64_t P_REGION_MAX = _rule(Placed, "region").max
cdef int64_t P_PAID_MIN = _rule(Placed, "paid_cents").min
cdef int64_t P_PAID_MAX = _rule(Placed, "paid_cents").max
cdef int64_t TS_MIN = _rule(Placed, "ts").min
cdef int64_t TS_MAX = _rule(Placed, "ts").max
cdef int64_t QTY_MIN = _rule(Redeem, "qty").min
cdef int64_t QTY_MAX = _rule(Redeem, "qty").max
if any((_rule(cls, "ts").min, _rule(cls, "ts").max) != (TS_MIN, TS_MAX)
       for cls in (Closed, Completed, Redeem)):
    raise ImportError("event ts fields differ in their limits; teach rc_read.pxi")


cdef inline PyObject *_field(PyObject *ev, Py_ssize_t off) noexcept:
    return (<PyObject **> ((<char *> ev) + off))[0]


cdef inline bint _id_ok(PyObject *v) noexcept:
    cdef Py_ssize_t n
    if v == NULL or not PyUnicode_CheckExact(v):
        return False
    n = PyUnicode_GET_LENGTH(v)
    return C_ID_MIN <= n <= C_ID_MAX


cdef inline bint _int_ok(PyObject *v, int64_t lo, int64_t hi, int64_t *out) noexcept:
    return rc_int_in(v, lo, hi, <long long *> out)  # ext/rc_pyint.h, always inlined


cdef inline void rc_hash_str(PyObject *s, uint64_t *fp, uint32_t *fp2) noexcept:
    cdef int kind = PyUnicode_KIND(s)
    rc_hash_bytes(PyUnicode_DATA(s), <size_t> (PyUnicode_GET_LENGTH(s) * kind), kind, fp, fp2)


cdef inline bint rc_read(PyObject *ev, rc_rec *r, bint pays_merchant) noexcept:
    """Fill `r` from `ev` and hash its order (or redemption) id; False when `ev` breaks a rule
    (the caller then raises with rc_refuse)."""
    cdef PyTypeObject *t = Py_TYPE(ev)
    cdef PyObject *agent
    cdef PyObject *merchant
    r.event = ev
    r.static_outcome = -1
    r.row = -1
    if t == T_PLACED:
        r.kind = K_PLACED
        r.order = _field(ev, OFF_P_ORDER)
        merchant = _field(ev, OFF_P_MERCHANT)
        agent = _field(ev, OFF_P_AGENT)
        if not (_id_ok(r.order) and _id_ok(merchant) and _id_ok(agent)
                and _int_ok(_field(ev, OFF_P_REGION), P_REGION_MIN, P_REGION_MAX, &r.region)
                and _int_ok(_field(ev, OFF_P_PAID), P_PAID_MIN, P_PAID_MAX, &r.paid)
                and _int_ok(_field(ev, OFF_P_TS), TS_MIN, TS_MAX, &r.ts)):
            return False
        r.who = merchant if pays_merchant else agent
    elif t == T_CLOSED or t == T_COMPLETED:
        r.kind = K_CLOSED if t == T_CLOSED else K_COMPLETED
        r.order = _field(ev, OFF_C_ORDER if t == T_CLOSED else OFF_D_ORDER)
        if not (_id_ok(r.order)
                and _int_ok(_field(ev, OFF_C_TS if t == T_CLOSED else OFF_D_TS),
                            TS_MIN, TS_MAX, &r.ts)):
            return False
    elif t == T_REDEEM:
        r.kind = K_REDEEM
        r.order = _field(ev, OFF_R_ID)
        r.who = _field(ev, OFF_R_WHO)
        r.prize = _field(ev, OFF_R_PRIZE)
        if not (_id_ok(r.order) and _id_ok(r.who) and _id_ok(r.prize)
                and _int_ok(_field(ev, OFF_R_TS), TS_MIN, TS_MAX, &r.ts)
                and _int_ok(_field(ev, OFF_R_QTY), QTY_MIN, QTY_MAX, &r.qty)):
            return False
    else:
        return False
    rc_hash_str(r.order, &r.fp, &r.fp2)
    return True


cdef int rc_refuse(list events, Py_ssize_t i) except -1:
    """The cold path of pass one: the Python check words the error (index, field)."""
    check_event(events[i], i)
    err = EventError(f"event {i}: refused by the compiled check but not by "
                     "rewardcore.events.check_event (a bug: the two must agree)")
    err.index = i
    raise err
