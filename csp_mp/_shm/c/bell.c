/* Doorbells: a counting semaphore as two 32-bit futex words in the arena (count, sleepers).
 *
 * Twin (the Python path of the same protocol, the readable specification):
 *   csp_mp/_shm/doorbell.py.
 *
 * ring() adds one post and wakes a sleeper only when the sleepers word says one may be asleep;
 * wait() takes a post, else announces itself in sleepers and sleeps in FUTEX_WAIT while count is
 * 0. The post and the announcement are seq_cst read-modify-writes, and the kernel re-reads count
 * under its own lock before sleeping, so a post is never lost: either the ringer sees the
 * sleeper (and wakes it) or the sleeper's FUTEX_WAIT sees the post (and returns at once).
 * Nothing is named: a P needs only the arena to ring or wait.
 *
 * Invariants:
 *   - count == posts not yet taken, saturating at BELL_MAX (a saturated bell is already due to
 *     wake, so a post that finds it full is dropped, not lost).
 *   - sleepers == threads between their announcement and their return from FUTEX_WAIT.
 *   - a wait holds its region and sleeps (or spins) at most WAIT_SLICE_NS at a time with the GIL
 *     released; between slices it runs signal handlers and gives up if the region was released.
 */
#include "core.h"

#include <math.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BELL_MAX 0x7fffffffu

static int bell_words(Region *r, long long off, aword32 **count, aword32 **sleepers) {
    if (region_span(r, off, 8, 8) < 0) return -1;
    *count = (aword32 *)(r->base + off);
    *sleepers = *count + 1;
    return 0;
}

static int bell_take(aword32 *count) {
    uint32_t v = atomic_load_explicit(count, memory_order_acquire);
    while (v > 0) {
        if (atomic_compare_exchange_weak_explicit(count, &v, v - 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return 1;
    }
    return 0;
}

static void bell_post(aword32 *count, aword32 *sleepers) {
    uint32_t v = atomic_load_explicit(count, memory_order_relaxed);
    do {
        if (v >= BELL_MAX) return;
    } while (!atomic_compare_exchange_weak_explicit(count, &v, v + 1, memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* seq_cst load: pairs with the sleeper's seq_cst announcement in bell_wait */
    if (atomic_load_explicit(sleepers, memory_order_seq_cst))
        syscall(SYS_futex, (uint32_t *)count, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 1 taken, 0 timed out, -1 a signal handler raised or the region was released (exception set).
 * timeout < 0: forever, else below WAIT_FOREVER_S; spin at most WAIT_FOREVER_S (the caller
 * clamps them: only a slice, never a timeout, is converted to a timespec). The caller holds
 * the region. */
static int bell_wait(Region *r, aword32 *count, aword32 *sleepers, double timeout, double spin) {
    if (bell_take(count)) return 1;
    if (timeout == 0) return 0;
    const double slice = WAIT_SLICE_NS * 1e-9;
    double start = now_s();
    double deadline = timeout < 0 ? -1 : start + timeout;
    double spin_until = start + spin;
    int got = 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        double now = now_s();
        if (now < spin_until) { /* spin, a slice at most */
            double until = spin_until < now + slice ? spin_until : now + slice;
            while (!(got = bell_take(count)) && now_s() < until) cpu_relax();
        } else {
            double left = deadline < 0 ? slice : deadline - now;
            if (left > slice) left = slice;
            if (left < 0) left = 0;
            struct timespec ts;
            ts.tv_sec = (time_t)left;
            ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
            atomic_fetch_add_explicit(sleepers, 1, memory_order_seq_cst);
            if (!(got = bell_take(count)))
                syscall(SYS_futex, (uint32_t *)count, FUTEX_WAIT, 0, &ts, NULL, 0);
            atomic_fetch_sub_explicit(sleepers, 1, memory_order_seq_cst);
            if (!got) got = bell_take(count);
        }
        Py_END_ALLOW_THREADS
        if (got) return 1;
        if (PyErr_CheckSignals() < 0) return -1;
        if (r->base == NULL) {
            PyErr_SetString(PyExc_ValueError, "the arena was closed while waiting on a doorbell");
            return -1;
        }
        if (deadline >= 0 && now_s() >= deadline) return 0;
    }
}

int bell_ring_at(Region *r, long long off) {
    aword32 *c, *s;
    if (bell_words(r, off, &c, &s) < 0) return -1;
    bell_post(c, s);
    return 0;
}

RMETH(R_bell_ring) {
    long long off;
    aword32 *c, *s;
    if (arg_count("bell_ring", nargs, 1, 1) < 0 || arg_ll(args[0], &off) < 0 ||
        bell_words(r, off, &c, &s) < 0)
        return NULL;
    bell_post(c, s);
    Py_RETURN_NONE;
}

/* ---- Bell: one doorbell of a region as an object (the Doorbell interface) */

typedef struct {
    PyObject_HEAD
    Region *region;
    long long off;
} BellObject;

/* A Bell the cyclic GC cleared (its region gone): ValueError, -1. */
static int bell_cleared(BellObject *self) {
    if (self->region != NULL) return 0;
    PyErr_SetString(PyExc_ValueError, "Bell: cleared by the garbage collector");
    return -1;
}

static PyObject *Bell_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *region;
    long long off;
    aword32 *c, *s;
    static char *kwlist[] = {"region", "offset", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!L:Bell", kwlist, &Region_Type, &region, &off) ||
        bell_words((Region *)region, off, &c, &s) < 0)
        return NULL;
    BellObject *self = (BellObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->region = (Region *)Py_NewRef(region);
    self->off = off;
    return (PyObject *)self;
}

static int Bell_traverse(BellObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->region);
    return 0;
}

/* The region goes with the cycle; a cleared Bell raises (bell_cleared). */
static int Bell_clear(BellObject *self) {
    Py_CLEAR(self->region);
    return 0;
}

static void Bell_dealloc(BellObject *self) {
    PyObject_GC_UnTrack(self);
    Bell_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Bell_ring(BellObject *self, PyObject *unused) {
    (void)unused;
    aword32 *c, *s;
    if (bell_cleared(self) < 0 || bell_words(self->region, self->off, &c, &s) < 0) return NULL;
    bell_post(c, s);
    Py_RETURN_NONE;
}

static PyObject *Bell_wait(BellObject *self, PyObject *const *args, Py_ssize_t nargs) {
    aword32 *c, *s;
    double timeout = -1, spin = 0;
    if (bell_cleared(self) < 0 || arg_count("wait", nargs, 0, 2) < 0) return NULL;
    if (nargs > 0 && args[0] != Py_None) {
        if (arg_seconds("timeout", args[0], 1, 1, &timeout) < 0) return NULL;
        /* the sign first: -inf is negative (no wait), +inf is forever, as None */
        if (timeout < 0) timeout = 0;
        else if (timeout >= WAIT_FOREVER_S) timeout = -1;
    }
    if (nargs > 1 && arg_seconds("spin", args[1], 0, 0, &spin) < 0) return NULL;
    if (spin > WAIT_FOREVER_S) spin = WAIT_FOREVER_S; /* a double compared, never converted */
    if (bell_words(self->region, self->off, &c, &s) < 0) return NULL;
    region_hold(self->region);
    int got = bell_wait(self->region, c, s, timeout, spin);
    region_drop(self->region);
    return got < 0 ? NULL : PyBool_FromLong(got);
}

static PyObject *Bell_drain(BellObject *self, PyObject *unused) {
    (void)unused;
    aword32 *c, *s;
    if (bell_cleared(self) < 0 || bell_words(self->region, self->off, &c, &s) < 0) return NULL;
    return PyLong_FromUnsignedLong(atomic_exchange_explicit(c, 0, memory_order_acq_rel));
}

static PyObject *Bell_get_pending(BellObject *self, void *unused) {
    (void)unused;
    aword32 *c, *s;
    if (bell_cleared(self) < 0 || bell_words(self->region, self->off, &c, &s) < 0) return NULL;
    return PyLong_FromUnsignedLong(atomic_load_explicit(c, memory_order_acquire));
}

static PyObject *Bell_get_offset(BellObject *self, void *unused) {
    (void)unused;
    return PyLong_FromLongLong(self->off);
}

static PyMethodDef Bell_methods[] = {
    {"ring", (PyCFunction)Bell_ring, METH_NOARGS, "Post one wake-up (any process, any thread)."},
    {"wait", (PyCFunction)(void (*)(void))Bell_wait, METH_FASTCALL,
     "wait(timeout=None, spin=0.0) -> bool: take one post, spinning `spin` seconds first, then "
     "sleeping up to `timeout` seconds (None, inf or 1e9 and above: forever; negative, -inf "
     "included: 0; NaN: ValueError). False on timeout."},
    {"drain", (PyCFunction)Bell_drain, METH_NOARGS, "Take every pending post; how many."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Bell_getset[] = {
    {"pending", (getter)Bell_get_pending, NULL, "Posts not yet taken (a snapshot).", NULL},
    {"offset", (getter)Bell_get_offset, NULL, "The bell's byte offset in its region.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Bell_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Bell",
    .tp_basicsize = sizeof(BellObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Bell(region, offset): a doorbell made of futex words in the arena.",
    .tp_new = Bell_new,
    .tp_dealloc = (destructor)Bell_dealloc,
    .tp_traverse = (traverseproc)Bell_traverse,
    .tp_clear = (inquiry)Bell_clear,
    .tp_methods = Bell_methods,
    .tp_getset = Bell_getset,
};
