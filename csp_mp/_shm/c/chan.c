/* The shared channel's fast paths: a send or receive that needs no goroutine to park.
 *
 * Twin (the Python path of the same protocol, the readable specification): csp_mp/_chan/shared.py
 *   (the protocol) and csp_mp/_chan/block.py (the block).
 *
 * The channel block (csp_mp/_chan/block.py has the layout, shared.py the full protocol) holds, in
 * words: magic, cap, closed, count, buffer ring, recvq ring, sendq ring, lock index, records in
 * recvq, records in sendq, references, id, grown. Everything in it but the references (atomic
 * adds) changes only under the channel's lock, or before the block is shared.
 *
 * chan_send buffers a value when the channel is open, no receiver is queued and the buffer has
 * room; chan_recv takes a buffered inline value when no sender is queued. ChanOps adds the
 * hand-off to a parked partner (below). In every other case they change nothing and return
 * False / None, and the caller runs the Python slow path, which re-decides everything under the
 * lock (closed channel, parking, select).
 * Go's chan.go takes the same order: a waiting partner first, then the buffer, then park.
 *
 * Invariants:
 *   - every word of the block but W_REFS changes only under the block's lock (W_LOCK), and a
 *     channel's block is found only through chan_open_at: in the region, 8-aligned, its magic
 *     current (load-acquire) and its lock index in range.
 *   - a ring, a frame or a wait record read here is checked before use (ring_open, ring_view,
 *     the record's size): corrupt words raise ValueError with the lock given back.
 *   - under the lock no Python code runs: only bytes are made (which cannot start a collection),
 *     so the pointers into the block stay good until lock_give; a wait for the lock that sees
 *     its region released gives up before touching anything (lock_take).
 *   - a hand-off claims its partner only after copying everything the wake-up needs (its value
 *     copied out of the record) and making the wake-up ready (wake_prepare: its message, the
 *     callback's arguments, this P's P_OWES word set), and wakes it after the lock is given
 *     back, even when giving the lock back failed: once won, a claim is followed by a wake-up.
 *   - ChanOps takes part in the cyclic GC: its codec callables and its Peers (whose deliver
 *     callback leads back to the process layer) are cleared with the cycle; a cleared ChanOps
 *     raises instead of running.
 */
#include "core.h"

#include <string.h>

#define CHAN_SPAN (CHAN_WORDS * WORD) /* the block's words (CHAN_BLOCK bytes are allocated) */

static aword *chan_open_at(Region *r, long long off, long long *lock) {
    if (region_span(r, off, CHAN_SPAN, 8) < 0) return NULL;
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

static aword *chan_open(Region *r, PyObject *o, long long *lock) {
    long long off;
    if (arg_ll(o, &off) < 0) return NULL;
    return chan_open_at(r, off, lock);
}

/* relaxed: every word of the block is read under the channel's lock */
#define LD(w, i) atomic_load_explicit(&(w)[i], memory_order_relaxed)
#define ST(w, i, v) atomic_store_explicit(&(w)[i], (v), memory_order_relaxed)

/* Under the lock: buffer `n` bytes at `p` if the channel is open, has no receiver queued and
 * has room: 1 done, 0 nothing changed, -1 error (exception set). */
static int send_buf_locked(Region *r, aword *w, const char *p, uint64_t n) {
    uint64_t count = LD(w, W_COUNT);
    if (LD(w, W_CLOSED) || LD(w, W_NRECV) || count >= LD(w, W_CAP)) return 0;
    ring_t g;
    if (ring_open(r, (long long)LD(w, W_BUF), &g) < 0) return -1;
    uint64_t t = atomic_load_explicit(g.tail, memory_order_relaxed), nt;
    uint64_t h = atomic_load_explicit(g.head, memory_order_relaxed);
    if (n > g.max_inline || !ring_write(&g, t, h, p, n, &nt)) return 0;
    atomic_store_explicit(g.tail, nt, memory_order_release); /* commit the frame */
    ST(w, W_COUNT, count + 1);
    return 1;
}

/* Under the lock: the oldest buffered inline value if no sender is queued (bytes), else
 * Py_None; NULL on error. */
static PyObject *recv_buf_locked(Region *r, aword *w) {
    uint64_t n = LD(w, W_COUNT);
    if (LD(w, W_NSEND) || n == 0) Py_RETURN_NONE;
    ring_t g;
    if (ring_open(r, (long long)LD(w, W_BUF), &g) < 0) return NULL;
    uint64_t h = atomic_load_explicit(g.head, memory_order_relaxed), nh;
    if (h == atomic_load_explicit(g.tail, memory_order_relaxed) ||
        ring_peek_kind(&g, h) != F_INLINE)
        Py_RETURN_NONE;
    PyObject *item = ring_read(&g, h, &nh);
    if (item != NULL) {
        atomic_store_explicit(g.head, nh, memory_order_release); /* frees the frame */
        ST(w, W_COUNT, n - 1);
    }
    return item;
}

static int chan_send_buf(Region *r, aword *w, long long lock, const char *p, uint64_t n) {
    if (lock_take(r, lock) < 0) return -1;
    int done = send_buf_locked(r, w, p, n);
    if (lock_give(r, lock) < 0) return -1;
    return done;
}

static PyObject *chan_recv_buf(Region *r, aword *w, long long lock) {
    if (lock_take(r, lock) < 0) return NULL;
    PyObject *item = recv_buf_locked(r, w);
    if (lock_give(r, lock) < 0) Py_CLEAR(item);
    return item;
}

RMETH(R_chan_send) {
    long long lock;
    aword *w;
    Py_buffer b;
    if (arg_count("chan_send", nargs, 2, 2) < 0 || (w = chan_open(r, args[0], &lock)) == NULL)
        return NULL;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0) return NULL;
    int done = chan_send_buf(r, w, lock, b.buf, (uint64_t)b.len);
    PyBuffer_Release(&b);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

/* chan_retire(off) -> bool: end the channel at `off` if it holds no value, no record and none of
 * its rings grew (its magic cleared: a stale name is refused); False, with nothing changed, when
 * the Python path must empty it first. No lock: its count reached 0, so no process can reach it
 * (the atomic add that took the count there ordered every earlier access before this one). */
int chan_retire_at(Region *r, long long off) {
    long long lock;
    aword *w = chan_open_at(r, off, &lock);
    if (w == NULL) return -1;
    int done = !LD(w, W_COUNT) && !LD(w, W_NSEND) && !LD(w, W_NRECV) && !LD(w, W_GROWN);
    if (done) ST(w, W_MAGIC, 0);
    return done;
}

RMETH(R_chan_retire) {
    long long off;
    if (arg_count("chan_retire", nargs, 1, 1) < 0 || arg_ll(args[0], &off) < 0) return NULL;
    int done = chan_retire_at(r, off);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

/* chan_reopen(off, cap): a retired block made a new open channel of capacity `cap` with one
 * reference (its creator's handle); the magic is stored last (release). The block must be an
 * arena block in use (its header's magic, block.py's new_block) past the arena's header, its
 * channel magic cleared (retired), and cap not negative (the word is read as unsigned). */
int chan_reopen_at(Region *r, long long off, long long cap) {
    if (cap < 0) {
        PyErr_Format(PyExc_ValueError, "chan_reopen: capacity %lld is out of range", cap);
        return -1;
    }
    if (region_span(r, off, CHAN_SPAN, 8) < 0) return -1;
    aword *w = word_at(r, off);
    /* the block header's magic word (arena.py: BLOCK_MAGIC | state | size class) */
    uint64_t head = off >= BLOCK_HEADER
                        ? atomic_load_explicit(&w[-(BLOCK_HEADER / WORD)], memory_order_relaxed)
                        : 0;
    if (off < BLOCK_HEADER || (head & ~(uint64_t)0xFFFF) != BLOCK_MAGIC ||
        (head & 0xFF00) != BLOCK_USED) {
        PyErr_Format(PyExc_ValueError, "chan_reopen: no channel block at arena offset %lld", off);
        return -1;
    }
    /* acquire: pairs with chan_retire's store; a live channel is never reopened */
    if (atomic_load_explicit(&w[W_MAGIC], memory_order_acquire) != 0) {
        PyErr_Format(PyExc_ValueError, "chan_reopen: the channel at arena offset %lld is not "
                     "retired", off);
        return -1;
    }
    ST(w, W_CAP, (uint64_t)cap);
    ST(w, W_CLOSED, 0);
    ST(w, W_REFS, 1);
    atomic_store_explicit(&w[W_MAGIC], CHAN_MAGIC, memory_order_release);
    return 0;
}

RMETH(R_chan_reopen) {
    long long off, cap;
    if (arg_count("chan_reopen", nargs, 2, 2) < 0 || arg_ll(args[0], &off) < 0 ||
        arg_ll(args[1], &cap) < 0 || chan_reopen_at(r, off, cap) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The block's word `i` if it holds a live channel whose id word is `id`; -1 if not (no error). */
long long chan_word_if(Region *r, long long off, uint64_t id, int i) {
    /* off > size - SPAN, not off + SPAN > size: off comes from a handle's name (any 64 bits) */
    if (r->base == NULL || off < 0 || off > (long long)r->size - CHAN_SPAN || off % 8) return -1;
    aword *w = word_at(r, off);
    if (atomic_load_explicit(&w[W_MAGIC], memory_order_acquire) != CHAN_MAGIC ||
        LD(w, W_ID) != id)
        return -1;
    return (long long)LD(w, i);
}

RMETH(R_chan_recv) {
    long long lock;
    aword *w;
    if (arg_count("chan_recv", nargs, 1, 1) < 0 || (w = chan_open(r, args[0], &lock)) == NULL)
        return NULL;
    return chan_recv_buf(r, w, lock);
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Spin (GIL released) until the channel is likely ready: for a send, closed or a receiver
 * queued or room in the buffer; for a receive, closed or a sender queued or a value buffered.
 * Racy reads without the lock, as Go's non-blocking fast checks: the caller re-decides under the
 * lock. True if it saw the channel ready within `seconds`; False at once when the doorbell at
 * `bell` (optional; negative: none) has a post: this P has other work waiting (a wake-up in
 * its inbox). */
RMETH(R_chan_poll) {
    long long lock, bell = -1;
    aword *w;
    double seconds;
    if (arg_count("chan_poll", nargs, 3, 4) < 0) return NULL;
    int for_send = PyObject_IsTrue(args[1]); /* can run Python code: before any check */
    if (for_send < 0 || arg_seconds("seconds", args[2], 0, 0, &seconds) < 0 ||
        (nargs > 3 && arg_ll(args[3], &bell) < 0) || (w = chan_open(r, args[0], &lock)) == NULL ||
        (bell >= 0 && region_span(r, bell, 8, 8) < 0))
        return NULL;
    if (seconds > WAIT_FOREVER_S) seconds = WAIT_FOREVER_S; /* no deadline; still in slices */
    /* the bell's post count (bell.c); relaxed loads: a hint, the hub takes the post */
    aword32 *posts = bell >= 0 ? (aword32 *)(r->base + bell) : NULL;
    int ready = 0, stop = 0;
    double until = mono() + seconds;
    region_hold(r);
    while (!ready && !stop) {
        Py_BEGIN_ALLOW_THREADS
        double slice_end = mono() + WAIT_SLICE_NS * 1e-9;
        for (unsigned k = 0;; k++) {
            /* acquire loads; pair with the stores made under the lock by the other side */
            uint64_t closed = atomic_load_explicit(&w[W_CLOSED], memory_order_acquire);
            uint64_t count = atomic_load_explicit(&w[W_COUNT], memory_order_acquire);
            if (for_send)
                ready = closed || atomic_load_explicit(&w[W_NRECV], memory_order_acquire) ||
                        count < atomic_load_explicit(&w[W_CAP], memory_order_relaxed);
            else
                ready = closed || count > 0 ||
                        atomic_load_explicit(&w[W_NSEND], memory_order_acquire);
            if (ready || (posts != NULL && atomic_load_explicit(posts, memory_order_relaxed)))
                break;
            if ((k & 63) == 0) {
                double now = mono();
                if (now >= until) {
                    stop = 1;
                    break;
                }
                if (now >= slice_end) break;
            }
            cpu_relax();
        }
        if (!ready && posts != NULL && atomic_load_explicit(posts, memory_order_relaxed))
            stop = 1;
        Py_END_ALLOW_THREADS
        /* between slices: signal handlers run, and a released region ends the poll */
        if (!ready && !stop && (PyErr_CheckSignals() < 0 || r->base == NULL)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "the arena was closed during chan_poll");
            region_drop(r);
            return NULL;
        }
    }
    region_drop(r);
    return PyBool_FromLong(ready);
}

/* ---- ChanOps: one shared channel's fast paths with the value codec's common cases in C
 *
 * send(v) buffers a value of the codec's plain kinds (int, float, str, bool, None, bytes below
 * the out-of-band size, and tuples of those), encoded as csp_mp/_shm/codec.py encodes them
 * (msgspec, a tuple behind the 0xc1 0x01 tag; None, bools, int64-range ints and tuples of at
 * most 15 of those are written and read here, byte for byte as msgspec writes them: small_put,
 * small_decode), or hands it to the oldest live receiver parked
 * on the channel; any other value, or a channel that cannot take it now, returns False with
 * nothing changed, and the caller runs the general path. recv() returns the decoded oldest
 * value (buffered, or the value of a sender parked on an unbuffered channel; a parked sender of
 * a full buffered channel moves its value into the buffer's end), or the `novalue` object when
 * the general path must run. send_data/recv_data do the same with encoded bytes.
 * recv_pair(hub) and send_pair(v, hub) are the channel state's recv and send whole, for a
 * channel with no codec of its own (csp_mp/_chan/shared_native.py): the fast path, else the
 * Python rest of it (recv_more, send_more), so that a receive or send that finishes here runs
 * no Python frame of the state.
 *
 * A hand-off (Go's chan.go `send`/`recv` with a waiting sudog) pops the waiter's record under
 * the channel lock, claims its select token (Peers), gives the lock back, then wakes it
 * (peers_wake: a WAKE message to another P, or the process layer's callback for one of this
 * P). Without a Peers object, or when the oldest record is one C leaves to Python (an
 * out-of-band frame, a dead select's record holding a value to free), nothing is handed.
 */

typedef struct {
    PyObject_HEAD
    Region *region;
    long long off;
    PyObject *menc, *mdec, *tdec, *decode_any, *novalue;
    Peers *peers; /* NULL: no hand-off */
    /* the entries' other halves (NULL: recv_pair/send_pair refuse): recv_more(hub) and
     * send_more(v, hub), the Python paths after a fast attempt that could not finish; after a
     * fast send, release() runs while the list dead holds anything */
    PyObject *recv_more, *send_more, *dead, *release;
    Py_ssize_t oob_min;
    unsigned long long ops, bytes; /* without peers: fast-path sends and receives, bytes sent */
} ChanOps;

/* runtime.metrics() counts: in this P's Peers, which outlives every channel handle */
static void count_op(ChanOps *self, uint64_t nbytes) {
    if (self->peers != NULL) {
        peers_count(self->peers, nbytes);
        return;
    }
    self->ops++;
    self->bytes += nbytes;
}

/* Under the channel lock: the oldest live record of wait queue `qi` (its record count in word
 * `nwi`), claimed, into *rec and, when it holds a value, a copy into *data. Dead records without
 * a value are dropped. With `buf`, a live record is claimed only if its value fits in `buf` after
 * tail word bt with head word bh. 1 found, 0 no live record (the queue is empty), 2 left to the
 * Python path, -1 error. */
static int pop_live(ChanOps *self, aword *w, int qi, int nwi, wrec *rec, PyObject **data,
                    ring_t *buf, uint64_t bt, uint64_t bh, wake_t *wk) {
    Region *r = self->region;
    *data = NULL;
    if (!LD(w, nwi)) return 0;
    ring_t g;
    if (ring_open(r, (long long)LD(w, qi), &g) < 0) return -1;
    /* Bounded by what the ring can hold: every record takes 8 + WREC_BYTES bytes at least, so
     * a queue whose tail is never reached (corrupt head or tail words) ends in ValueError after
     * one round of the ring, not in a walk for ever with the GIL and the lock held. */
    for (uint64_t left = g.cap / (8 + WREC_BYTES) + 1;; left--) {
        if (left == 0) {
            PyErr_SetString(PyExc_ValueError, "corrupt channel wait queue: its tail is never "
                                              "reached");
            return -1;
        }
        uint64_t h = atomic_load_explicit(g.head, memory_order_relaxed), n, nh;
        if (h == atomic_load_explicit(g.tail, memory_order_relaxed)) {
            ST(w, nwi, 0);
            return 0;
        }
        const char *p;
        int k = ring_view(&g, h, &p, &n, &nh);
        if (k <= 0) return k < 0 ? -1 : 2;
        if (n < WREC_BYTES) {
            PyErr_SetString(PyExc_ValueError, "corrupt channel wait record");
            return -1;
        }
        memcpy(rec, p, WREC_BYTES);
        if (qi == W_SENDQ && !rec->has) { /* checked before a claim, which must lead to a wake */
            PyErr_SetString(PyExc_ValueError, "a parked sender's record holds no value");
            return -1;
        }
        if (buf != NULL && !ring_fits(buf, bt, bh, n - WREC_BYTES)) return 2;
        if (rec->has) { /* copied before the claim: once won, the hand-off cannot fail */
            *data = PyBytes_FromStringAndSize(p + WREC_BYTES, (Py_ssize_t)(n - WREC_BYTES));
            if (*data == NULL) return -1;
        }
        /* the wake-up made ready first: a won claim is followed by a wake-up */
        if (wake_prepare(self->peers, wk, rec) < 0) {
            Py_CLEAR(*data);
            return -1;
        }
        int live = rec->slot < 0 ? peers_plain_live(self->peers, rec->p, rec->gid)
                                 : peers_claim(self->peers, rec->p, rec->slot, rec->gen);
        if (live <= 0 && *data != NULL) {
            Py_CLEAR(*data);
            if (live == 0) return 2; /* its value's blocks are freed by the Python path */
        }
        if (live < 0) return -1;
        atomic_store_explicit(g.head, nh, memory_order_release); /* frees the frame */
        ST(w, nwi, LD(w, nwi) - 1);
        if (live) return 1;
    }
}

/* Wake the claimed waiter `rec`, also when an exception is pending (giving the lock back
 * failed): that exception stays the one raised. 0 or -1. */
static int wake_claimed(ChanOps *self, wake_t *wk, const wrec *rec) {
    if (!PyErr_Occurred()) return peers_wake(self->peers, wk, rec);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (peers_wake(self->peers, wk, rec) < 0) PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(et, ev, tb);
    return -1;
}

/* Send `n` bytes at `p` (the object `obj`; `dobj` the bytes object holding them, or NULL)
 * without parking: to the oldest live receiver or into the buffer. 1 done, 0 nothing changed
 * (closed, full, or left to Python), -1 error. */
static int ops_send(ChanOps *self, const char *p, uint64_t n, PyObject *dobj, PyObject *obj) {
    long long lock;
    Region *r = self->region;
    aword *w = chan_open_at(r, self->off, &lock);
    if (w == NULL) return -1;
    wrec rec;
    wake_t wk;
    int k = 0, ready = 0;
    /* The wake-up is made ready before the lock (wake_init may allocate its message buffer):
     * when a racy look says a receiver may be queued; if the lock then finds one all the same,
     * it is given back and taken again with the wake-up ready (a second pass at most). */
    for (int pass = 0;; pass++) {
        if (self->peers != NULL && !ready &&
            (pass > 0 || atomic_load_explicit(&w[W_NRECV], memory_order_relaxed))) {
            if (wake_init(self->peers, &wk, K_VALUE, p, n, dobj, obj, self->off) < 0) return -1;
            ready = 1;
        }
        if (lock_take(r, lock) < 0) {
            if (ready) wake_done(self->peers, &wk);
            return -1;
        }
        if (ready || self->peers == NULL || !LD(w, W_NRECV) || LD(w, W_CLOSED)) break;
        if (lock_give(r, lock) < 0) return -1;
    }
    if (ready && LD(w, W_NRECV) && !LD(w, W_CLOSED)) {
        PyObject *none;
        k = pop_live(self, w, W_RECVQ, W_NRECV, &rec, &none, NULL, 0, 0, &wk);
        if (k >= 0) Py_XDECREF(none); /* receivers' records hold no value */
    }
    int done = k == 0 ? send_buf_locked(r, w, p, n) : k == 1 ? 1 : k < 0 ? -1 : 0;
    if (lock_give(r, lock) < 0) done = -1; /* a claimed receiver is woken all the same */
    if (k == 1 && wake_claimed(self, &wk, &rec) < 0) done = -1;
    if (ready) wake_done(self->peers, &wk);
    return done;
}

/* Under the lock, a buffered channel with a sender parked (so a full buffer): the oldest
 * buffered value (bytes) and the sender's value moved to the buffer's end in its place, as Go's
 * recv does; the claimed sender in *rec. Py_None when left to Python (an out-of-band frame at
 * either end, a value that does not fit the ring's bytes: the Python path grows it), NULL on
 * error; *k as pop_live's. */
static PyObject *recv_rotate_locked(ChanOps *self, aword *w, wrec *rec, int *k, wake_t *wk) {
    Region *r = self->region;
    ring_t g;
    *k = -1; /* every return below sets it; an error return keeps this */
    if (ring_open(r, (long long)LD(w, W_BUF), &g) < 0) return NULL;
    uint64_t h = atomic_load_explicit(g.head, memory_order_relaxed), nh, n;
    uint64_t t = atomic_load_explicit(g.tail, memory_order_relaxed), nt;
    const char *p;
    *k = 2;
    if (h == t) return Py_NewRef(Py_None);
    int kind = ring_view(&g, h, &p, &n, &nh);
    if (kind <= 0) { /* corrupt, or an out-of-band value at the head */
        *k = kind < 0 ? -1 : 2;
        return kind < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *data, *item = PyBytes_FromStringAndSize(p, (Py_ssize_t)n); /* before a claim */
    if (item == NULL) {
        *k = -1;
        return NULL;
    }
    *k = pop_live(self, w, W_SENDQ, W_NSEND, rec, &data, &g, t, nh, wk);
    if (*k != 1) {
        Py_DECREF(item);
        return *k < 0 ? NULL : Py_NewRef(Py_None);
    }
    /* claimed: data holds its value (pop_live refused a sender's record without one) */
    /* commit the read first: a process killed after it loses this value, never tears a frame */
    atomic_store_explicit(g.head, nh, memory_order_release);
    ring_write(&g, t, nh, PyBytes_AS_STRING(data), (uint64_t)PyBytes_GET_SIZE(data), &nt);
    atomic_store_explicit(g.tail, nt, memory_order_release); /* fits: pop_live checked */
    Py_DECREF(data);
    return item;
}

/* Receive without parking: the value of a sender parked on an unbuffered channel, the oldest
 * buffered value (a parked sender's then moving into the buffer), or the oldest buffered inline
 * value. Bytes, Py_None when the Python path must run, NULL on error. */
static PyObject *ops_recv(ChanOps *self) {
    long long lock;
    Region *r = self->region;
    aword *w = chan_open_at(r, self->off, &lock);
    if (w == NULL) return NULL;
    wrec rec;
    wake_t wk;
    PyObject *data = NULL;
    int k = 0, woke = 0;
    if (lock_take(r, lock) < 0) return NULL;
    if (LD(w, W_NSEND) && self->peers != NULL) {
        /* only with a sender queued: a K_SENT wake-up carries no value, so its wake_init
         * allocates nothing (the message fits wake_t's own buffer) and may run under the lock */
        if (wake_init(self->peers, &wk, K_SENT, NULL, 0, NULL, NULL, self->off) < 0) {
            (void)lock_give(r, lock);
            return NULL;
        }
        woke = 1;
        if (LD(w, W_CAP) == 0)
            k = pop_live(self, w, W_SENDQ, W_NSEND, &rec, &data, NULL, 0, 0, &wk);
        else if (LD(w, W_COUNT) > 0) {
            data = recv_rotate_locked(self, w, &rec, &k, &wk);
            if (k == 0) Py_CLEAR(data); /* no live sender: a plain buffered receive below */
        } else
            k = 2;
    }
    if (k == 0)
        data = recv_buf_locked(r, w);
    else if (k == 2 && data == NULL)
        data = Py_NewRef(Py_None);
    if (lock_give(r, lock) < 0) Py_CLEAR(data); /* a claimed sender is woken all the same */
    /* claimed (k == 1): data holds its value (pop_live refused a record without one) */
    if (k == 1 && wake_claimed(self, &wk, &rec) < 0) Py_CLEAR(data);
    if (woke) wake_done(self->peers, &wk);
    return data;
}

/* A ChanOps the cyclic GC cleared (its codec and Peers gone): ValueError, -1. */
static int cleared(ChanOps *self) {
    (void)self;
    PyErr_SetString(PyExc_ValueError, "ChanOps: cleared by the garbage collector");
    return -1;
}

static int plain_leaf(PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    return t == &PyLong_Type || t == &PyFloat_Type || t == &PyUnicode_Type || t == &PyBool_Type ||
           o == Py_None || t == &PyBytes_Type;
}

/* The msgpack bytes msgspec writes for o when o is None, a bool or an int of the int64 range
 * (the smallest form: a fixint, else uint8..uint64 for x >= 0, int8..int64 below), written at p
 * (9 bytes at most): how many; 0 for any other object, which msgspec's encoder takes. */
static int small_put(unsigned char *p, PyObject *o) {
    if (o == Py_None || o == Py_True || o == Py_False) {
        p[0] = o == Py_None ? 0xc0 : o == Py_True ? 0xc3 : 0xc2;
        return 1;
    }
    if (Py_TYPE(o) != &PyLong_Type) return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    uint64_t u = (uint64_t)x;
    int n;
    if (x >= 0) {
        if (x < 128) {
            p[0] = (unsigned char)x;
            return 1;
        }
        n = x < 256 ? 1 : x < 65536 ? 2 : x <= 0xffffffffLL ? 4 : 8;
        p[0] = n == 1 ? 0xcc : n == 2 ? 0xcd : n == 4 ? 0xce : 0xcf;
    } else {
        if (x >= -32) {
            p[0] = (unsigned char)(x & 0xff);
            return 1;
        }
        n = x >= -128 ? 1 : x >= -32768 ? 2 : x >= -2147483648LL ? 4 : 8;
        p[0] = n == 1 ? 0xd0 : n == 2 ? 0xd1 : n == 4 ? 0xd2 : 0xd3;
    }
    for (int i = 0; i < n; i++) p[1 + i] = (unsigned char)(u >> (8 * (n - 1 - i)));
    return 1 + n;
}

/* The object small_put wrote at p (end: past the last byte): a new reference, *used its size;
 * NULL with no exception set when p holds another kind (msgspec's decoder reads it). */
static PyObject *small_get(const unsigned char *p, const unsigned char *end, Py_ssize_t *used) {
    if (p >= end) return NULL;
    unsigned char b = p[0];
    *used = 1;
    if (b < 0x80) return PyLong_FromLong(b);
    if (b >= 0xe0) return PyLong_FromLong((long)b - 256);
    if (b == 0xc0) Py_RETURN_NONE;
    if (b == 0xc2) Py_RETURN_FALSE;
    if (b == 0xc3) Py_RETURN_TRUE;
    int n = (b == 0xcc || b == 0xd0) ? 1 : (b == 0xcd || b == 0xd1) ? 2
          : (b == 0xce || b == 0xd2) ? 4 : (b == 0xcf || b == 0xd3) ? 8 : 0;
    if (n == 0 || end - p < 1 + n) return NULL;
    uint64_t u = 0;
    for (int i = 0; i < n; i++) u = u << 8 | p[1 + i];
    *used = 1 + n;
    if (b >= 0xcc && b <= 0xcf) return PyLong_FromUnsignedLongLong(u);
    int shift = 64 - 8 * n; /* sign-extend the n-byte two's complement */
    return PyLong_FromLongLong((long long)(u << shift) >> shift);
}

/* The value of the codec's bytes p[0..n) when they hold one small_put kind, or a tuple of at
 * most 15 of them, read here: a new reference; NULL with no exception set otherwise (the
 * codec's decoders read those). */
static PyObject *small_decode(const unsigned char *p, Py_ssize_t n) {
    const unsigned char *end = p + n;
    Py_ssize_t used;
    if (n >= 3 && p[0] == CODEC_EXT && p[1] == CODEC_TUPLE && (p[2] & 0xf0) == 0x90) {
        Py_ssize_t k = p[2] & 0x0f;
        PyObject *t = PyTuple_New(k);
        if (t == NULL) return NULL;
        const unsigned char *q = p + 3;
        for (Py_ssize_t i = 0; i < k; i++) {
            PyObject *o = small_get(q, end, &used);
            if (o == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, o);
            q += used;
        }
        if (q == end) return t;
        Py_DECREF(t); /* trailing bytes: not the codec's tuple, its decoder says why */
        return NULL;
    }
    PyObject *o = small_get(p, end, &used);
    if (o != NULL && used != n) {
        Py_DECREF(o);
        return NULL;
    }
    return o;
}

/* The codec's bytes of v if it is of a plain kind; Py_None if not (or if msgspec cannot take
 * it: a huge int, a lone surrogate, which the codec pickles); NULL on another error. None,
 * bools, int64-range ints and tuples of at most 15 of those are written here, byte for byte as
 * msgspec writes them; the rest by msgspec (menc). */
static PyObject *plain_encode(ChanOps *self, PyObject *v) {
    PyTypeObject *t = Py_TYPE(v);
    int tuple = 0;
    unsigned char small[3 + 15 * 9];
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        Py_ssize_t k = n < 16 ? 3 : -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *o = PyTuple_GET_ITEM(v, i);
            int w = k < 0 ? 0 : small_put(small + k, o);
            if (w == 0 && !plain_leaf(o)) Py_RETURN_NONE;
            k = w == 0 ? -1 : k + w;
        }
        if (k > 0) {
            small[0] = (unsigned char)CODEC_EXT;
            small[1] = CODEC_TUPLE;
            small[2] = (unsigned char)(0x90 | n);
            return PyBytes_FromStringAndSize((const char *)small, k);
        }
        tuple = 1;
    } else if (!plain_leaf(v) || (t == &PyBytes_Type && PyBytes_GET_SIZE(v) >= self->oob_min)) {
        Py_RETURN_NONE;
    } else {
        int w = small_put(small, v);
        if (w > 0) return PyBytes_FromStringAndSize((const char *)small, w);
    }
    PyObject *data = PyObject_CallOneArg(self->menc, v);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError) ||
            PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    if (!tuple) return data;
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *tagged = PyBytes_FromStringAndSize(NULL, n + 2);
    if (tagged != NULL) {
        char *p = PyBytes_AS_STRING(tagged);
        p[0] = (char)CODEC_EXT;
        p[1] = CODEC_TUPLE;
        memcpy(p + 2, PyBytes_AS_STRING(data), (size_t)n);
    }
    Py_DECREF(data);
    return tagged;
}

static PyObject *ChanOps_send(ChanOps *self, PyObject *v) {
    if (self->novalue == NULL && cleared(self) < 0) return NULL;
    PyObject *data = plain_encode(self, v);
    if (data == NULL) return NULL;
    if (data == Py_None) {
        Py_DECREF(data);
        Py_RETURN_FALSE;
    }
    int done = ops_send(self, PyBytes_AS_STRING(data), (uint64_t)PyBytes_GET_SIZE(data), data, v);
    if (done > 0) count_op(self, (uint64_t)PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

static PyObject *ChanOps_send_data(ChanOps *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    if ((self->novalue == NULL && cleared(self) < 0) || arg_count("send_data", nargs, 2, 2) < 0 ||
        PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    int done = ops_send(self, b.buf, (uint64_t)b.len,
                        PyBytes_CheckExact(args[0]) ? args[0] : NULL, args[1]);
    PyBuffer_Release(&b);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

static PyObject *ChanOps_recv_data(ChanOps *self, PyObject *unused) {
    (void)unused;
    if (self->novalue == NULL && cleared(self) < 0) return NULL;
    return ops_recv(self);
}

static PyObject *ChanOps_recv(ChanOps *self, PyObject *unused) {
    (void)unused;
    if (self->novalue == NULL && cleared(self) < 0) return NULL;
    PyObject *data = ops_recv(self);
    if (data == NULL) return NULL;
    if (data == Py_None) {
        Py_DECREF(data);
        return Py_NewRef(self->novalue);
    }
    count_op(self, 0);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *v = small_decode(p, n);
    if (v != NULL || PyErr_Occurred()) {
        Py_DECREF(data);
        return v;
    }
    if (n >= 2 && p[0] == CODEC_EXT && p[1] == CODEC_TUPLE) { /* a tuple */
        PyObject *body = PyBytes_FromStringAndSize((const char *)p + 2, n - 2);
        v = body == NULL ? NULL : PyObject_CallOneArg(self->tdec, body);
        Py_XDECREF(body);
    } else if (n >= 1 && (p[0] == CODEC_EXT || (p[0] == CODEC_PICKLE && n > 1))) { /* the codec's others */
        v = PyObject_CallOneArg(self->decode_any, data);
    } else {
        v = PyObject_CallOneArg(self->mdec, data);
    }
    Py_DECREF(data);
    return v;
}

/* recv_pair(hub): the channel state's recv(hub) -> (value, True) in one call: the fast path,
 * else recv_more(hub), the Python rest of it. */
static PyObject *ChanOps_recv_pair(ChanOps *self, PyObject *hub) {
    if (self->novalue == NULL && cleared(self) < 0) return NULL;
    if (self->recv_more == NULL) {
        PyErr_SetString(PyExc_TypeError, "ChanOps: recv_pair() needs recv_more");
        return NULL;
    }
    PyObject *v = ChanOps_recv(self, NULL);
    if (v == NULL) return NULL;
    if (v != self->novalue) { /* (a decode that ran Python code may have cleared it: a value) */
        PyObject *t = PyTuple_Pack(2, v, Py_True);
        Py_DECREF(v);
        return t;
    }
    Py_DECREF(v);
    if (self->recv_more == NULL) { /* cleared by a decode that ran Python code */
        cleared(self);
        return NULL;
    }
    return PyObject_CallOneArg(self->recv_more, hub);
}

/* send_pair(v, hub): the channel state's send(v, hub) in one call: the fast path (then
 * release() while dead holds a handle to drop), else send_more(v, hub). */
static PyObject *ChanOps_send_pair(ChanOps *self, PyObject *const *args, Py_ssize_t nargs) {
    if ((self->novalue == NULL && cleared(self) < 0) || arg_count("send_pair", nargs, 2, 2) < 0)
        return NULL;
    if (self->send_more == NULL) {
        PyErr_SetString(PyExc_TypeError, "ChanOps: send_pair() needs send_more");
        return NULL;
    }
    PyObject *r = ChanOps_send(self, args[0]);
    if (r == NULL) return NULL;
    int sent = r == Py_True;
    Py_DECREF(r);
    if (sent) {
        if (self->dead != NULL && PyList_GET_SIZE(self->dead) > 0 && self->release != NULL)
            return PyObject_CallNoArgs(self->release);
        Py_RETURN_NONE;
    }
    if (self->send_more == NULL) { /* cleared by an encode that ran Python code */
        cleared(self);
        return NULL;
    }
    return PyObject_Vectorcall(self->send_more, args, 2, NULL);
}

static PyObject *ChanOps_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *region, *menc, *mdec, *tdec, *decode_any, *novalue, *peers = Py_None;
    PyObject *recv_more = Py_None, *send_more = Py_None, *dead = Py_None, *release = Py_None;
    long long off, lock;
    Py_ssize_t oob_min;
    static char *kwlist[] = {"region", "offset", "menc", "mdec", "tdec", "decode_any",
                             "novalue", "oob_min", "peers", "recv_more", "send_more", "dead",
                             "release", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!LOOOOOn|OOOOO:ChanOps", kwlist, &Region_Type,
                                     &region, &off, &menc, &mdec, &tdec, &decode_any, &novalue,
                                     &oob_min, &peers, &recv_more, &send_more, &dead, &release))
        return NULL;
    if ((recv_more != Py_None && !PyCallable_Check(recv_more)) ||
        (send_more != Py_None && !PyCallable_Check(send_more)) ||
        (release != Py_None && !PyCallable_Check(release)) ||
        (dead != Py_None && !PyList_CheckExact(dead)) || ((dead == Py_None) != (release == Py_None))) {
        PyErr_SetString(PyExc_TypeError, "ChanOps: recv_more, send_more and release must be "
                                         "callable or None, dead a list given with release");
        return NULL;
    }
    if (chan_open_at((Region *)region, off, &lock) == NULL) return NULL;
    if (peers != Py_None && (!PyObject_TypeCheck(peers, &Peers_Type) ||
                             !peers_region_is((Peers *)peers, (Region *)region))) {
        PyErr_SetString(PyExc_TypeError, "ChanOps: peers must be a Peers of the same region");
        return NULL;
    }
    ChanOps *self = (ChanOps *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->peers = peers == Py_None ? NULL : (Peers *)Py_NewRef(peers);
    self->region = (Region *)Py_NewRef(region);
    self->off = off;
    self->menc = Py_NewRef(menc);
    self->mdec = Py_NewRef(mdec);
    self->tdec = Py_NewRef(tdec);
    self->decode_any = Py_NewRef(decode_any);
    self->novalue = Py_NewRef(novalue);
    self->recv_more = recv_more == Py_None ? NULL : Py_NewRef(recv_more);
    self->send_more = send_more == Py_None ? NULL : Py_NewRef(send_more);
    self->dead = dead == Py_None ? NULL : Py_NewRef(dead);
    self->release = release == Py_None ? NULL : Py_NewRef(release);
    self->oob_min = oob_min;
    return (PyObject *)self;
}

static int ChanOps_traverse(ChanOps *self, visitproc visit, void *arg) {
    Py_VISIT(self->region);
    Py_VISIT(self->menc);
    Py_VISIT(self->mdec);
    Py_VISIT(self->tdec);
    Py_VISIT(self->decode_any);
    Py_VISIT(self->novalue);
    Py_VISIT(self->peers);
    Py_VISIT(self->recv_more);
    Py_VISIT(self->send_more);
    Py_VISIT(self->dead);
    Py_VISIT(self->release);
    return 0;
}

/* Breaks cycles through the codec callables and the Peers (whose deliver callback leads back
 * to the process layer); the region stays (it refers to nothing of ours). A cleared ChanOps
 * refuses to run (cleared()). */
static int ChanOps_clear(ChanOps *self) {
    Py_CLEAR(self->novalue); /* first: a finalizer run by the clearing sees it cleared */
    Py_CLEAR(self->menc);
    Py_CLEAR(self->mdec);
    Py_CLEAR(self->tdec);
    Py_CLEAR(self->decode_any);
    Py_CLEAR(self->peers);
    Py_CLEAR(self->recv_more);
    Py_CLEAR(self->send_more);
    Py_CLEAR(self->dead);
    Py_CLEAR(self->release);
    return 0;
}

static void ChanOps_dealloc(ChanOps *self) {
    PyObject_GC_UnTrack(self);
    ChanOps_clear(self);
    Py_XDECREF(self->region);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ChanOps_get_ops(ChanOps *self, void *unused) {
    (void)unused;
    return PyLong_FromUnsignedLongLong(self->ops);
}

static PyObject *ChanOps_get_bytes(ChanOps *self, void *unused) {
    (void)unused;
    return PyLong_FromUnsignedLongLong(self->bytes);
}

static PyGetSetDef ChanOps_getset[] = {
    {"ops", (getter)ChanOps_get_ops, NULL,
     "Sends and receives done by this object (without peers: else its Peers counts).", NULL},
    {"bytes", (getter)ChanOps_get_bytes, NULL, "Encoded bytes it sent (the same).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef ChanOps_methods[] = {
    {"send", (PyCFunction)ChanOps_send, METH_O,
     "send(v) -> bool: handed to a parked receiver or buffered without parking (a value of the "
     "codec's plain kinds), else False with nothing changed."},
    {"send_data", (PyCFunction)(void (*)(void))ChanOps_send_data, METH_FASTCALL,
     "send_data(data, obj) -> bool: send(), for the encoded value `data` of object `obj`."},
    {"recv", (PyCFunction)ChanOps_recv, METH_NOARGS,
     "recv(): the oldest value (buffered, or a parked sender's), decoded, or `novalue` when "
     "the slow path must run."},
    {"recv_pair", (PyCFunction)ChanOps_recv_pair, METH_O,
     "recv_pair(hub) -> (value, ok): the fast path's value with True, else recv_more(hub)."},
    {"send_pair", (PyCFunction)(void (*)(void))ChanOps_send_pair, METH_FASTCALL,
     "send_pair(v, hub): send(v), then release() while dead holds anything; else "
     "send_more(v, hub)."},
    {"recv_data", (PyCFunction)ChanOps_recv_data, METH_NOARGS,
     "recv_data() -> bytes | None: recv() without decoding; None when the slow path must run."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ChanOps_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.ChanOps",
    .tp_basicsize = sizeof(ChanOps),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ChanOps(region, offset, menc, mdec, tdec, decode_any, novalue, oob_min, "
              "peers=None, recv_more=None, send_more=None, dead=None, release=None): one "
              "shared channel's fast paths, values and hand-offs included.",
    .tp_new = ChanOps_new,
    .tp_dealloc = (destructor)ChanOps_dealloc,
    .tp_traverse = (traverseproc)ChanOps_traverse,
    .tp_clear = (inquiry)ChanOps_clear,
    .tp_methods = ChanOps_methods,
    .tp_getset = ChanOps_getset,
};
