/* Reading a Python int into int64 without a function call for the common sizes.
 *
 * Event fields (region codes, cents, epoch-ms times) are one or two 30-bit digits on
 * CPython 3.11; the generic conversion cost ~50 instructions each, three times an event.
 * Anything else goes through PyLong_AsLongLongAndOverflow.
 * Returns 0 and sets *out, 1 on overflow, -1 with a Python error set.
 */
#ifndef RC_PYINT_H
#define RC_PYINT_H

#include <Python.h>

static inline int rc_long_value(PyObject *v, long long *out) {
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        *out = (long long)PyUnstable_Long_CompactValue((PyLongObject *)v);
        return 0;
    }
#else
    const digit *d = ((PyLongObject *)v)->ob_digit;
    switch (Py_SIZE(v)) {
    case 0: *out = 0; return 0;
    case 1: *out = (long long)d[0]; return 0;
    case 2: *out = (long long)d[0] | ((long long)d[1] << PyLong_SHIFT); return 0;
    case -1: *out = -(long long)d[0]; return 0;
    case -2: *out = -((long long)d[0] | ((long long)d[1] << PyLong_SHIFT)); return 0;
    default: break;
    }
#endif
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return 1;
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = x;
    return 0;
}

/* An exact int within [lo, hi] read into *out: 1, else 0 (not an exact int, beyond int64, or
 * outside the range). Always inlined: pass one calls it for every int field of every event. */
static inline __attribute__((always_inline)) int
rc_int_in(PyObject *v, long long lo, long long hi, long long *out) {
    if (v == NULL || !PyLong_CheckExact(v)) return 0;
    if (rc_long_value(v, out) != 0) {
        PyErr_Clear();  /* cannot fail for an exact int: keep no stray error */
        return 0;
    }
    return lo <= *out && *out <= hi;
}

#endif
