/* csp_mp._shm._core: the Region type (one mapped arena), its word operations and the module.
 *
 * Twin (the Python path of the same protocol, the readable specification): csp_mp/_shm/atomics.py
 *   (words) and csp_mp/_shm/arena.py (the mapping).
 *
 * A Region holds the arena's buffer for as long as it is open; release() closes it, after which
 * every method raises ValueError instead of touching unmapped memory. A release() while a call
 * sleeps on the region (region_hold) lets the buffer go when that call returns.
 */
#include "core.h"

#include <math.h>

int arg_count(const char *fn, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi) {
    if (nargs < lo || nargs > hi) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)", fn, lo, hi,
                     nargs);
        return -1;
    }
    return 0;
}

int arg_ll(PyObject *o, long long *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

int arg_u64(PyObject *o, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

int arg_seconds(const char *what, PyObject *o, int inf_ok, int neg_ok, double *out) {
    double v = PyFloat_AsDouble(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (isnan(v) || (!inf_ok && isinf(v)) || (!neg_ok && v < 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a%s number of seconds, not %R", what,
                     neg_ok ? (inf_ok ? "" : " finite") : (inf_ok ? " non-negative" :
                                                           " finite non-negative"), o);
        return -1;
    }
    *out = v;
    return 0;
}

int region_span(Region *r, long long off, long long len, long long align) {
    if (r->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the arena is closed");
        return -1;
    }
    if (off < 0 || len < 0 || off > r->size - len || (align > 1 && off % align)) {
        PyErr_Format(PyExc_ValueError,
                     "arena offset %lld (length %lld) is outside the %zd-byte arena or misaligned",
                     off, len, r->size);
        return -1;
    }
    return 0;
}

/* ---- the Region type */

static PyObject *Region_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *buf;
    Py_ssize_t locks_at, nlocks;
    static char *kwlist[] = {"buffer", "locks_at", "nlocks", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Onn:Region", kwlist, &buf, &locks_at, &nlocks))
        return NULL;
    Region *self = (Region *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_WRITABLE) < 0) {
        self->view.obj = NULL;
        Py_DECREF(self);
        return NULL;
    }
    if (((uintptr_t)self->view.buf) % LINE) {
        PyErr_SetString(PyExc_ValueError, "the arena buffer must be 64-byte aligned");
        Py_DECREF(self); /* lets the buffer go */
        return NULL;
    }
    self->size = self->view.len;
    if (nlocks < 0 || locks_at < 0 || locks_at % LINE || nlocks > self->size / LINE ||
        locks_at > self->size - nlocks * (Py_ssize_t)LINE) {
        PyErr_SetString(PyExc_ValueError, "the lock lines lie outside the arena");
        Py_DECREF(self);
        return NULL;
    }
    self->locks_at = locks_at;
    self->nlocks = nlocks;
    self->base = self->view.buf; /* open: last, once every field is checked */
    return (PyObject *)self;
}

/* The buffer let go: the mutexes of it this thread holds given back first (locks_let_go). */
static void region_let_go(Region *r) {
    if (r->view.obj == NULL) return;
    locks_let_go(r);
    PyBuffer_Release(&r->view);
}

void region_drop(Region *r) {
    if (--r->holds == 0 && r->base == NULL) region_let_go(r);
}

static PyObject *Region_release(Region *self, PyObject *unused) {
    (void)unused;
    self->base = NULL; /* closed to new calls; a holder's call lets the buffer go */
    if (self->holds == 0) region_let_go(self);
    Py_RETURN_NONE;
}

static int Region_traverse(Region *self, visitproc visit, void *arg) {
    Py_VISIT(self->view.obj);
    return 0;
}

/* The buffer goes with the cycle, as by release(): the region is closed, so every later call
 * raises ValueError ("the arena is closed"); a call holding it lets the buffer go on return. */
static int Region_clear(Region *self) {
    self->base = NULL;
    if (self->holds == 0) region_let_go(self);
    return 0;
}

static void Region_dealloc(Region *self) {
    PyObject_GC_UnTrack(self);
    region_let_go(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Region_get_size(Region *self, void *unused) {
    (void)unused;
    return PyLong_FromSsize_t(self->base ? self->size : 0);
}

/* ---- words: offsets in bytes, 8-aligned */

static int word_arg(Region *r, PyObject *o, aword **w) {
    long long off;
    if (arg_ll(o, &off) < 0 || region_span(r, off, 8, 8) < 0) return -1;
    *w = word_at(r, off);
    return 0;
}

RMETH(R_load) {
    aword *w;
    if (arg_count("load", nargs, 1, 1) < 0 || word_arg(r, args[0], &w) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load_explicit(w, memory_order_acquire));
}

RMETH(R_store) {
    aword *w;
    uint64_t v;
    if (arg_count("store", nargs, 2, 2) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_u64(args[1], &v) < 0)
        return NULL;
    atomic_store_explicit(w, v, memory_order_release);
    Py_RETURN_NONE;
}

RMETH(R_cas) {
    aword *w;
    uint64_t old, new;
    if (arg_count("cas", nargs, 3, 3) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_u64(args[1], &old) < 0 || arg_u64(args[2], &new) < 0)
        return NULL;
    return PyBool_FromLong(atomic_compare_exchange_strong_explicit(
        w, &old, new, memory_order_seq_cst, memory_order_seq_cst));
}

RMETH(R_fetch_add) {
    aword *w;
    long long d;
    if (arg_count("fetch_add", nargs, 2, 2) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_ll(args[1], &d) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(
        atomic_fetch_add_explicit(w, (uint64_t)d, memory_order_seq_cst));
}

/* signed views of the same words, for atomic.Int64 (two's complement, wrapping as Go's int64) */

RMETH(R_iload) {
    aword *w;
    if (arg_count("iload", nargs, 1, 1) < 0 || word_arg(r, args[0], &w) < 0) return NULL;
    return PyLong_FromLongLong((int64_t)atomic_load_explicit(w, memory_order_seq_cst));
}

RMETH(R_istore) {
    aword *w;
    long long v;
    if (arg_count("istore", nargs, 2, 2) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_ll(args[1], &v) < 0)
        return NULL;
    atomic_store_explicit(w, (uint64_t)v, memory_order_seq_cst);
    Py_RETURN_NONE;
}

RMETH(R_iadd) {
    aword *w;
    long long d;
    if (arg_count("iadd", nargs, 2, 2) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_ll(args[1], &d) < 0)
        return NULL;
    uint64_t old = atomic_fetch_add_explicit(w, (uint64_t)d, memory_order_seq_cst);
    return PyLong_FromLongLong((int64_t)(old + (uint64_t)d));
}

RMETH(R_iswap) {
    aword *w;
    long long v;
    if (arg_count("iswap", nargs, 2, 2) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_ll(args[1], &v) < 0)
        return NULL;
    return PyLong_FromLongLong(
        (int64_t)atomic_exchange_explicit(w, (uint64_t)v, memory_order_seq_cst));
}

RMETH(R_icas) {
    aword *w;
    long long old, new;
    if (arg_count("icas", nargs, 3, 3) < 0 || word_arg(r, args[0], &w) < 0 ||
        arg_ll(args[1], &old) < 0 || arg_ll(args[2], &new) < 0)
        return NULL;
    uint64_t o = (uint64_t)old;
    return PyBool_FromLong(atomic_compare_exchange_strong_explicit(
        w, &o, (uint64_t)new, memory_order_seq_cst, memory_order_seq_cst));
}

/* A bounded stack of words under a shared lock: the word at byte offset `at` holds its size n,
 * the n words after it its items. A pop or a push commits with its one store of the size, so
 * a holder killed before that store changed nothing. */

int stack_pop_at(Region *r, long long at, long long lock, uint64_t *v) {
    if (region_span(r, at, 8, 8) < 0) return -1;
    aword *w = word_at(r, at);
    if (atomic_load_explicit(w, memory_order_relaxed) == 0) return 0; /* a snapshot */
    if (lock_take(r, lock) < 0) return -1;
    uint64_t n = atomic_load_explicit(w, memory_order_relaxed);
    int got = 0;
    if (n > 0) {
        /* n is a word of the arena: checked before it scales an offset */
        if (n > (uint64_t)(r->size / 8) || region_span(r, at + (long long)n * 8, 8, 8) < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "corrupt word stack at arena offset %lld", at);
            (void)lock_give(r, lock);
            return -1;
        }
        *v = atomic_load_explicit(&w[n], memory_order_relaxed);
        atomic_store_explicit(w, n - 1, memory_order_relaxed);
        got = 1;
    }
    return lock_give(r, lock) < 0 ? -1 : got;
}

int stack_push_at(Region *r, long long at, long long lock, uint64_t v, long long max) {
    if (max < 0 || max >= r->size / 8) {
        PyErr_Format(PyExc_ValueError, "a word stack of %lld items does not fit the arena", max);
        return -1;
    }
    if (region_span(r, at, (max + 1) * 8, 8) < 0) return -1;
    aword *w = word_at(r, at);
    if (lock_take(r, lock) < 0) return -1;
    uint64_t n = atomic_load_explicit(w, memory_order_relaxed);
    int done = n < (uint64_t)max; /* and so w[n + 1] lies in the span checked above */
    if (done) {
        atomic_store_explicit(&w[n + 1], v, memory_order_relaxed);
        atomic_store_explicit(w, n + 1, memory_order_relaxed);
    }
    return lock_give(r, lock) < 0 ? -1 : done;
}

RMETH(R_stack_pop) {
    long long at, lock;
    uint64_t v = 0;
    if (arg_count("stack_pop", nargs, 2, 2) < 0 || arg_ll(args[0], &at) < 0 ||
        arg_ll(args[1], &lock) < 0)
        return NULL;
    int got = stack_pop_at(r, at, lock, &v);
    if (got < 0) return NULL;
    if (!got) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(v);
}

RMETH(R_stack_push) {
    long long at, lock, max;
    uint64_t v;
    if (arg_count("stack_push", nargs, 4, 4) < 0 || arg_ll(args[0], &at) < 0 ||
        arg_ll(args[1], &lock) < 0 || arg_u64(args[2], &v) < 0 || arg_ll(args[3], &max) < 0)
        return NULL;
    int done = stack_push_at(r, at, lock, v, max);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

#define FAST(name, doc) {#name + 2, (PyCFunction)(void (*)(void))name, METH_FASTCALL, doc}

static PyMethodDef Region_methods[] = {
    {"release", (PyCFunction)Region_release, METH_NOARGS,
     "Close the region: later calls raise; the buffer is let go now, or when the last call "
     "sleeping on the region returns."},
    FAST(R_load, "load(off) -> int: load-acquire of the word at byte offset off."),
    FAST(R_store, "store(off, v): store-release of the word at byte offset off."),
    FAST(R_cas, "cas(off, old, new) -> bool: compare-and-swap (seq_cst)."),
    FAST(R_fetch_add, "fetch_add(off, d) -> int: add d (mod 2**64), return the old value."),
    FAST(R_stack_pop, "stack_pop(at, lock) -> int | None: under lock `lock`, take the top item "
                      "of the stack whose size is the word at `at` (items follow it); None "
                      "when empty."),
    FAST(R_stack_push, "stack_push(at, lock, v, max) -> bool: under lock `lock`, push v unless "
                       "the stack holds `max` items already."),
    FAST(R_iload, "iload(off) -> int: the word as a signed 64-bit integer."),
    FAST(R_istore, "istore(off, v): store a signed 64-bit integer."),
    FAST(R_iadd, "iadd(off, d) -> int: add d (wrapping), return the new signed value."),
    FAST(R_iswap, "iswap(off, v) -> int: exchange, return the old signed value."),
    FAST(R_icas, "icas(off, old, new) -> bool: signed compare-and-swap."),
    FAST(R_lock_init, "lock_init(i): make lock i a robust process-shared mutex (creator only)."),
    FAST(R_lock, "lock(i) -> bool: take lock i; True if taken over from a dead holder."),
    FAST(R_unlock, "unlock(i): release lock i (the thread that took it)."),
    FAST(R_lock_owner, "lock_owner(i) -> int: the holder's process id, 0 if free (a snapshot)."),
    FAST(R_locks_orphaned, "locks_orphaned() -> bool: whether a state lock's holder died and no "
                           "one has taken it since (a snapshot)."),
    FAST(R_ring_try_put, "ring_try_put(off, data) -> int: 1 put, 0 full, -1 not inline-sized."),
    FAST(R_ring_put_locked, "ring_put_locked(off, data) -> int: try_put under the caller's lock."),
    FAST(R_ring_try_get, "ring_try_get(off): oldest frame: bytes, (offset, length), or None."),
    FAST(R_ring_get_locked, "ring_get_locked(off): try_get under the caller's lock."),
    FAST(R_ring_put_many, "ring_put_many(off, items, start) -> int: index of the first not put."),
    FAST(R_ring_get_many, "ring_get_many(off, max) -> list of frames."),
    FAST(R_ring_len, "ring_len(off) -> int: frames waiting (a snapshot)."),
    FAST(R_ring_move_locked, "ring_move_locked(src, dst) -> int: move src's frames to the end "
                             "of dst, under the caller's lock of src; how many moved."),
    FAST(R_chan_send, "chan_send(off, data) -> bool: buffered without parking, else False."),
    FAST(R_chan_recv, "chan_recv(off) -> bytes | None: a buffered inline value, else None."),
    FAST(R_chan_retire, "chan_retire(off) -> bool: end an empty channel none of whose rings "
                        "grew; False (nothing changed) when it holds values or records."),
    FAST(R_chan_reopen, "chan_reopen(off, cap): a retired channel block open again, empty."),
    FAST(R_chan_poll, "chan_poll(off, for_send, seconds, bell=-1) -> bool: wait until likely "
                      "ready, or until the doorbell at `bell` has a post (False); `seconds` is "
                      "finite and not negative (else ValueError)."),
    FAST(R_bell_ring, "bell_ring(off): post the doorbell at off."),
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Region_getset[] = {
    {"size", (getter)Region_get_size, NULL, "Bytes mapped (0 once released).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Region_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Region",
    .tp_basicsize = sizeof(Region),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Region(buffer, locks_at, nlocks): word, lock, ring and channel operations on one "
              "mapped arena.",
    .tp_new = Region_new,
    .tp_dealloc = (destructor)Region_dealloc,
    .tp_traverse = (traverseproc)Region_traverse,
    .tp_clear = (inquiry)Region_clear,
    .tp_methods = Region_methods,
    .tp_getset = Region_getset,
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "csp_mp._shm._core",
    .m_doc = "The compiled core: arena words, robust locks, doorbells, rings, channel fast paths.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&Region_Type) < 0 || PyType_Ready(&Lock_Type) < 0 ||
        PyType_Ready(&Bell_Type) < 0 || PyType_Ready(&TaskEncoder_Type) < 0 ||
        PyType_Ready(&ChanOps_Type) < 0 || PyType_Ready(&Spawner_Type) < 0 ||
        PyType_Ready(&Peers_Type) < 0 || PyType_Ready(&Handles_Type) < 0 ||
        PyType_Ready(&HandleRef_Type) < 0 || PyType_Ready(&Sites_Type) < 0 ||
        PyType_Ready(&GoEntry_Type) < 0 || PyType_Ready(&GRecord_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Region", (PyObject *)&Region_Type) < 0 ||
        PyModule_AddObjectRef(m, "Lock", (PyObject *)&Lock_Type) < 0 ||
        PyModule_AddObjectRef(m, "Bell", (PyObject *)&Bell_Type) < 0 ||
        PyModule_AddObjectRef(m, "TaskEncoder", (PyObject *)&TaskEncoder_Type) < 0 ||
        PyModule_AddObjectRef(m, "Spawner", (PyObject *)&Spawner_Type) < 0 ||
        PyModule_AddObjectRef(m, "ChanOps", (PyObject *)&ChanOps_Type) < 0 ||
        PyModule_AddObjectRef(m, "Peers", (PyObject *)&Peers_Type) < 0 ||
        PyModule_AddObjectRef(m, "Handles", (PyObject *)&Handles_Type) < 0 ||
        PyModule_AddObjectRef(m, "HandleRef", (PyObject *)&HandleRef_Type) < 0 ||
        PyModule_AddObjectRef(m, "Sites", (PyObject *)&Sites_Type) < 0 ||
        PyModule_AddObjectRef(m, "GoEntry", (PyObject *)&GoEntry_Type) < 0 ||
        PyModule_AddObjectRef(m, "GRecord", (PyObject *)&GRecord_Type) < 0 ||
        PyModule_AddIntConstant(m, "LOCK_BYTES", (long)sizeof(pthread_mutex_t)) < 0 ||
        PyModule_AddIntConstant(m, "WREC_BYTES", (long)WREC_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "K_VALUE", K_VALUE) < 0 ||
        PyModule_AddIntConstant(m, "K_SENT", K_SENT) < 0 ||
        PyModule_AddStringConstant(m, "LAYOUT_DIGEST", LAYOUT_DIGEST) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
