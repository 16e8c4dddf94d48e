/* The shared channel's fast paths: a send or receive that needs no goroutine to park or wake.
 *
 * The channel block (csp_mp/_chan/shared.py has the layout and the full protocol) holds, in
 * words: magic, cap, closed, count, buffer ring, recvq ring, sendq ring, lock index, records in
 * recvq, records in sendq. Everything in it changes only under the channel's lock.
 *
 * chan_send buffers a value when the channel is open, no receiver is queued and the buffer has
 * room; chan_recv takes a buffered inline value when no sender is queued. In every other case
 * they change nothing and return False / None, and the caller runs the Python slow path, which
 * re-decides everything under the lock (hand-off to a waiter, closed channel, parking).
 * Go's chan.go takes the same order: a waiting partner first, then the buffer, then park.
 */
#include "core.h"

#define CHAN_MAGIC UINT64_C(0xC4A7000000000001)
#define CHAN_BLOCK (10 * 8)

enum { W_MAGIC, W_CAP, W_CLOSED, W_COUNT, W_BUF, W_RECVQ, W_SENDQ, W_LOCK, W_NRECV, W_NSEND };

static aword *chan_open(Region *r, PyObject *o, long long *lock) {
    long long off;
    if (arg_ll(o, &off) < 0 || region_span(r, off, CHAN_BLOCK, 8) < 0) return NULL;
    aword *w = word_at(r, off);
    /* load-acquire; pairs with the creator's final store of the magic */
    if (atomic_load_explicit(&w[W_MAGIC], memory_order_acquire) != CHAN_MAGIC) {
        PyErr_Format(PyExc_ValueError, "no shared channel at arena offset %lld", off);
        return NULL;
    }
    *lock = (long long)atomic_load_explicit(&w[W_LOCK], memory_order_relaxed);
    if (lock_index_ok(r, *lock) < 0) return NULL;
    return w;
}

/* relaxed: every word of the block is read under the channel's lock */
#define LD(w, i) atomic_load_explicit(&(w)[i], memory_order_relaxed)
#define ST(w, i, v) atomic_store_explicit(&(w)[i], (v), memory_order_relaxed)

RMETH(R_chan_send) {
    long long lock;
    aword *w;
    Py_buffer b;
    if (arg_count("chan_send", nargs, 2, 2) < 0 || (w = chan_open(r, args[0], &lock)) == NULL)
        return NULL;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0) return NULL;
    if (lock_take(r, lock) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    int done = 0;
    uint64_t n = LD(w, W_COUNT);
    if (!LD(w, W_CLOSED) && !LD(w, W_NRECV) && n < LD(w, W_CAP)) {
        ring_t g;
        if (ring_open(r, (long long)LD(w, W_BUF), &g) < 0) {
            lock_give(r, lock);
            PyBuffer_Release(&b);
            return NULL;
        }
        uint64_t t = atomic_load_explicit(g.tail, memory_order_relaxed), nt;
        uint64_t h = atomic_load_explicit(g.head, memory_order_relaxed);
        if ((uint64_t)b.len <= g.max_inline && ring_write(&g, t, h, b.buf, (uint64_t)b.len, &nt)) {
            atomic_store_explicit(g.tail, nt, memory_order_release); /* commit the frame */
            ST(w, W_COUNT, n + 1);
            done = 1;
        }
    }
    PyBuffer_Release(&b);
    if (lock_give(r, lock) < 0) return NULL;
    return PyBool_FromLong(done);
}

RMETH(R_chan_recv) {
    long long lock;
    aword *w;
    if (arg_count("chan_recv", nargs, 1, 1) < 0 || (w = chan_open(r, args[0], &lock)) == NULL)
        return NULL;
    if (lock_take(r, lock) < 0) return NULL;
    PyObject *item = Py_None;
    uint64_t n = LD(w, W_COUNT);
    if (!LD(w, W_NSEND) && n > 0) {
        ring_t g;
        if (ring_open(r, (long long)LD(w, W_BUF), &g) < 0) {
            lock_give(r, lock);
            return NULL;
        }
        uint64_t h = atomic_load_explicit(g.head, memory_order_relaxed), nh;
        if (h != atomic_load_explicit(g.tail, memory_order_relaxed) &&
            ring_peek_kind(&g, h) == F_INLINE) {
            item = ring_read(&g, h, &nh);
            if (item != NULL) {
                atomic_store_explicit(g.head, nh, memory_order_release); /* frees the frame */
                ST(w, W_COUNT, n - 1);
            }
        }
    }
    if (lock_give(r, lock) < 0) {
        if (item != Py_None) Py_XDECREF(item);
        return NULL;
    }
    return item == Py_None ? Py_NewRef(Py_None) : item;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Spin (GIL released) until the channel is likely ready: for a send, closed or a receiver
 * queued or room in the buffer; for a receive, closed or a sender queued or a value buffered.
 * Racy reads without the lock, as Go's non-blocking fast checks: the caller re-decides under the
 * lock. True if it saw the channel ready within `seconds`. */
RMETH(R_chan_poll) {
    long long lock;
    aword *w;
    double seconds;
    if (arg_count("chan_poll", nargs, 3, 3) < 0 || (w = chan_open(r, args[0], &lock)) == NULL)
        return NULL;
    int for_send = PyObject_IsTrue(args[1]);
    if (for_send < 0) return NULL;
    seconds = PyFloat_AsDouble(args[2]);
    if (seconds == -1 && PyErr_Occurred()) return NULL;
    int ready = 0;
    Py_BEGIN_ALLOW_THREADS
    double until = mono() + seconds;
    for (unsigned k = 0;; k++) {
        /* acquire loads; pair with the stores made under the lock by the other side */
        uint64_t closed = atomic_load_explicit(&w[W_CLOSED], memory_order_acquire);
        uint64_t count = atomic_load_explicit(&w[W_COUNT], memory_order_acquire);
        if (for_send)
            ready = closed || atomic_load_explicit(&w[W_NRECV], memory_order_acquire) ||
                    count < atomic_load_explicit(&w[W_CAP], memory_order_relaxed);
        else
            ready = closed || count > 0 || atomic_load_explicit(&w[W_NSEND], memory_order_acquire);
        if (ready || ((k & 63) == 0 && mono() >= until)) break;
        cpu_relax();
    }
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ready);
}
