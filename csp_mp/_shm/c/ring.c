/* Rings of framed messages: the block layout, frame format and commit rules of ring_frames.py
 *
 * Twin (the Python path of the same protocol, the readable specification):
 *   csp_mp/_shm/ring_frames.py, ring_batch.py and ring.py.
 * (runs of frames: ring_batch.py; locked and SPSC rings: ring.py).
 *
 * Block: line 0 constants (magic, capacity, lock index, kind); line 1 the head word; line 2 the
 * tail word; then `capacity` data bytes. Head and tail words pack count << POS_BITS | position.
 * A frame is a header word (kind << KIND_SHIFT | length) and its payload padded to 8 bytes.
 *
 * Invariants (those Python modules'):
 *   - a producer writes the frame, then commits it with ONE store-release of the tail word;
 *     a consumer copies the frame out, then frees it with ONE store-release of the head word. A
 *     process killed before its commit store leaves the ring as it was.
 *   - locked rings: head and tail change only under the ring's lock; SPSC rings: only the one
 *     producer stores the tail and only the one consumer stores the head.
 *   - this file writes inline frames only; out-of-band messages (bigger than capacity /
 *     INLINE_SHARE - FRAME_HEADER) need the arena allocator, which stays in Python: put returns
 *     -1 for them and get returns an out-of-band frame as (offset, length) for the caller to
 *     fetch and free.
 *   - the ring's words are shared memory any process may have scribbled on, so nothing read
 *     from them is trusted: a head or tail word is used only once both positions are 8-aligned
 *     and at most `capacity` bytes apart (ring_used), a frame only once it lies inside the data
 *     and between head and tail (frame_at). A corrupt ring raises ValueError, its lock given
 *     back; every loop over frames consumes at least one word of the `capacity` bytes in use per
 *     step, so it ends.
 */
#include "core.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The word after head or tail word w once a frame of `bytes` bytes (wrap skip included) has
 * passed it. */
static inline uint64_t ring_next(uint64_t w, uint64_t pos, uint64_t bytes) {
    return (((w >> POS_BITS) + 1) & M24) << POS_BITS | ((pos + bytes) & M40);
}

/* The bytes an inline frame with n payload bytes takes in the ring, header included. */
static inline uint64_t inline_size(uint64_t n) {
    return FRAME_HEADER + ((n + 7) & ~UINT64_C(7));
}

/* The bytes in use between head word h and tail word t, or UINT64_MAX when the pair is corrupt:
 * a position not 8-aligned, more than `cap` bytes apart, or more frames counted than fit. */
static inline uint64_t ring_used(const ring_t *g, uint64_t h, uint64_t t) {
    uint64_t used = ((t & M40) - (h & M40)) & M40;
    uint64_t count = ((t >> POS_BITS) - (h >> POS_BITS)) & M24;
    if (((h | t) & 7) || used > g->cap || count > used / FRAME_HEADER) return UINT64_MAX;
    return used;
}

/* ValueError naming the corrupt ring at arena offset `off`: `what` is wrong with its head word
 * h and tail word t. */
static void ring_corrupt(long long off, const char *what, uint64_t h, uint64_t t) {
    char msg[256];
    /* formatted here: PyErr_Format has no 64-bit hex conversion */
    snprintf(msg, sizeof msg, "corrupt ring at arena offset %lld: %s (head word 0x%" PRIx64
             ", tail word 0x%" PRIx64 ")", off, what, h, t);
    PyErr_SetString(PyExc_ValueError, msg);
}

static const char BAD_WORDS[] =
    "head and tail positions misaligned, or further apart than its capacity or its count allows";

int ring_open(Region *r, long long off, ring_t *g) {
    if (region_span(r, off, RING_HEADER, LINE) < 0) return -1;
    aword *w = word_at(r, off);
    /* load-acquire; pairs with the creator's final store of the magic (Ring.create) */
    if (atomic_load_explicit(&w[RW_MAGIC], memory_order_acquire) != RING_MAGIC) {
        PyErr_Format(PyExc_ValueError, "no ring at arena offset %lld", off);
        return -1;
    }
    uint64_t cap = atomic_load_explicit(&w[RW_CAP], memory_order_relaxed);
    if (cap < RING_MIN_CAP || (cap & (cap - 1)) ||
        cap > (uint64_t)(r->size - off - RING_HEADER)) {
        PyErr_Format(PyExc_ValueError, "corrupt ring at arena offset %lld: capacity %llu", off,
                     (unsigned long long)cap);
        return -1;
    }
    g->cap = cap;
    g->mask = cap - 1;
    g->max_inline = cap / INLINE_SHARE - FRAME_HEADER;
    g->lock = atomic_load_explicit(&w[RW_LOCK], memory_order_relaxed);
    g->kind = atomic_load_explicit(&w[RW_KIND], memory_order_relaxed);
    if (g->kind != RING_LOCKED && g->kind != RING_SPSC) {
        /* not one this file knows how to take: never run it without its lock */
        PyErr_Format(PyExc_ValueError, "corrupt ring at arena offset %lld: unknown kind %llu",
                     off, (unsigned long long)g->kind);
        return -1;
    }
    if (g->kind == RING_LOCKED && lock_index_ok(r, (long long)g->lock) < 0) return -1;
    g->head = word_at(r, off + RING_HEAD_LINE * LINE);
    g->tail = word_at(r, off + RING_TAIL_LINE * LINE);
    g->data = r->base + off + RING_HEADER;
    g->off = off;
    return 0;
}

int ring_fits(ring_t *g, uint64_t t, uint64_t h, uint64_t n) {
    uint64_t used = ring_used(g, h, t);
    if (used == UINT64_MAX || n > g->max_inline) return 0; /* corrupt: the caller's read says */
    uint64_t need = inline_size(n), rem = g->cap - (t & M40 & g->mask);
    uint64_t skip = rem >= need ? 0 : rem;
    return g->cap - used >= need + skip;
}

int ring_write(ring_t *g, uint64_t t, uint64_t h, const char *p, uint64_t n, uint64_t *nt) {
    *nt = t; /* unchanged unless written */
    /* the checks of ring_fits: t is 8-aligned, so the wrap marker and the frame lie in the data */
    if (!ring_fits(g, t, h, n)) return 0;
    uint64_t need = inline_size(n), tpos = t & M40, i = tpos & g->mask, rem = g->cap - i;
    uint64_t skip = rem >= need ? 0 : rem;
    char *q = g->data + i;
    if (skip) {
        *(uint64_t *)q = (uint64_t)F_WRAP << KIND_SHIFT; /* unpublished until the tail store */
        q = g->data;
    }
    *(uint64_t *)q = (uint64_t)F_INLINE << KIND_SHIFT | n;
    memcpy(q + FRAME_HEADER, p, n);
    *nt = ring_next(t, tpos, skip + need);
    return 1;
}

/* The frame at head word h with `used` bytes (ring_used) up to the tail: its header word in
 * *f, its header and payload from *p, its bytes in the ring in *size and the head word after it
 * in *nh. NULL, or what is wrong with it. A wrap marker is skipped. */
typedef struct {
    const char *p;
    uint64_t hdr, size, nh;
} frame_t;

static const char *frame_at(const ring_t *g, uint64_t h, uint64_t used, frame_t *f) {
    if (used == UINT64_MAX) return BAD_WORDS;
    uint64_t hpos = h & M40, i = hpos & g->mask, skip = 0;
    const char *p = g->data + i; /* i is 8-aligned and below cap: the word lies in the data */
    uint64_t hdr = *(const uint64_t *)p; /* ordered after the tail load that showed this frame */
    if (hdr >> KIND_SHIFT == F_WRAP) {
        skip = g->cap - i;
        p = g->data;
        hdr = *(const uint64_t *)p;
    }
    uint64_t size;
    if (hdr >> KIND_SHIFT == F_INLINE)
        size = inline_size(hdr & M32);
    else if (hdr >> KIND_SHIFT == F_OOB)
        size = OOB_FRAME;
    else
        return "a frame of unknown kind at the head";
    if (size > g->cap - (uint64_t)(p - g->data)) return "the head frame runs past the ring's end";
    if (skip + size > used) return "the head frame runs past the tail";
    f->p = p;
    f->hdr = hdr;
    f->size = size;
    f->nh = ring_next(h, hpos, skip + size);
    return NULL;
}

/* The frame's item: bytes, or (offset, length) for an out-of-band frame. */
static PyObject *frame_item(const frame_t *f) {
    if (f->hdr >> KIND_SHIFT == F_OOB)
        return Py_BuildValue("(KK)", (unsigned long long)((const uint64_t *)f->p)[1],
                             (unsigned long long)((const uint64_t *)f->p)[2]);
    return PyBytes_FromStringAndSize(f->p + FRAME_HEADER, (Py_ssize_t)(f->hdr & M32));
}

/* The tail word, for the callers that pass only the head: load-acquire, pairs with the
 * producer's commit store (a later tail than the caller saw only has more frames). */
static uint64_t tail_now(const ring_t *g) {
    return atomic_load_explicit(g->tail, memory_order_acquire);
}

int ring_peek_kind(ring_t *g, uint64_t h) {
    frame_t f;
    /* corrupt: INLINE, so that the ring_read or ring_view that follows reports it */
    return frame_at(g, h, ring_used(g, h, tail_now(g)), &f) ? F_INLINE : (int)(f.hdr >> KIND_SHIFT);
}

PyObject *ring_read(ring_t *g, uint64_t h, uint64_t *nh) {
    frame_t f;
    uint64_t t = tail_now(g);
    const char *bad = frame_at(g, h, ring_used(g, h, t), &f);
    if (bad != NULL) {
        ring_corrupt(g->off, bad, h, t);
        return NULL;
    }
    *nh = f.nh;
    return frame_item(&f);
}

int ring_view(ring_t *g, uint64_t h, const char **p, uint64_t *n, uint64_t *nh) {
    frame_t f;
    uint64_t t = tail_now(g);
    const char *bad = frame_at(g, h, ring_used(g, h, t), &f);
    if (bad != NULL) {
        ring_corrupt(g->off, bad, h, t);
        return -1;
    }
    if (f.hdr >> KIND_SHIFT == F_OOB) return 0;
    *n = f.hdr & M32;
    *p = f.p + FRAME_HEADER;
    *nh = f.nh;
    return 1;
}

/* ---- taking the ring's side: the lock for a locked ring, nothing for SPSC */

static int ring_enter(Region *r, ring_t *g) {
    return g->kind == RING_LOCKED ? lock_take(r, (long long)g->lock) : 0;
}

static int ring_leave(Region *r, ring_t *g) {
    return g->kind == RING_LOCKED ? lock_give(r, (long long)g->lock) : 0;
}

/* 1 put, 0 full, -1 corrupt (exception set); caller has the producer side */
static int put_one(ring_t *g, const char *p, uint64_t n) {
    uint64_t t = atomic_load_explicit(g->tail, memory_order_relaxed);
    /* load-acquire; pairs with the consumer's store-release of the head */
    uint64_t h = atomic_load_explicit(g->head, memory_order_acquire), nt;
    if (ring_used(g, h, t) == UINT64_MAX) {
        ring_corrupt(g->off, BAD_WORDS, h, t);
        return -1;
    }
    if (!ring_write(g, t, h, p, n, &nt)) return 0;
    atomic_store_explicit(g->tail, nt, memory_order_release); /* commit; pairs with get's load */
    return 1;
}

/* the oldest frame or Py_None; caller has the consumer side */
static PyObject *get_one(ring_t *g) {
    uint64_t h = atomic_load_explicit(g->head, memory_order_relaxed);
    /* load-acquire; pairs with the producer's commit store of the tail */
    uint64_t t = atomic_load_explicit(g->tail, memory_order_acquire);
    if (h == t) Py_RETURN_NONE;
    frame_t f;
    const char *bad = frame_at(g, h, ring_used(g, h, t), &f);
    if (bad != NULL) {
        ring_corrupt(g->off, bad, h, t);
        return NULL;
    }
    PyObject *item = frame_item(&f); /* can start a collection: the caller holds the region */
    if (item != NULL) atomic_store_explicit(g->head, f.nh, memory_order_release); /* frees it */
    return item;
}

/* ---- the Region methods. Each converts all its arguments before it opens a ring: a
 * conversion can run Python code (__index__), which could release the region under an opened
 * ring_t. */

static PyObject *put_common(Region *r, PyObject *const *args, Py_ssize_t nargs, int locked) {
    ring_t g;
    Py_buffer b;
    long long off;
    if (arg_count("ring_try_put", nargs, 2, 2) < 0 || arg_ll(args[0], &off) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0) return NULL;
    if (ring_open(r, off, &g) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    int res = -1; /* not inline-sized: the Python path puts it out of band */
    if ((uint64_t)b.len <= g.max_inline) {
        if (!locked && ring_enter(r, &g) < 0) {
            PyBuffer_Release(&b);
            return NULL;
        }
        res = put_one(&g, b.buf, (uint64_t)b.len); /* -1: corrupt */
        if (res < 0) res = -2;
        if (!locked && ring_leave(r, &g) < 0) res = -2;
    }
    PyBuffer_Release(&b);
    return res == -2 ? NULL : PyLong_FromLong(res);
}

int ring_put_bytes(Region *r, ring_t *g, const char *p, uint64_t n) {
    if (n > g->max_inline) return 0;
    /* the caller may have run Python code since ring_open (an SPSC ring takes no lock, which
     * would have refused a released region) */
    if (region_span(r, 0, 0, 1) < 0 || ring_enter(r, g) < 0) return -1;
    int put = put_one(g, p, n);
    if (ring_leave(r, g) < 0) return -1;
    return put;
}

RMETH(R_ring_try_put) { return put_common(r, args, nargs, 0); }

RMETH(R_ring_put_locked) { return put_common(r, args, nargs, 1); }

static PyObject *get_common(Region *r, PyObject *const *args, Py_ssize_t nargs, int locked) {
    ring_t g;
    long long off;
    if (arg_count("ring_try_get", nargs, 1, 1) < 0 || arg_ll(args[0], &off) < 0 ||
        ring_open(r, off, &g) < 0)
        return NULL;
    if (!locked && ring_enter(r, &g) < 0) return NULL;
    /* an out-of-band frame's tuple can start a collection, whose finalizers may release the
     * region: held, it keeps the buffer, and the lock can still be given back */
    region_hold(r);
    PyObject *item = get_one(&g);
    if (!locked && ring_leave(r, &g) < 0) Py_CLEAR(item);
    region_drop(r);
    return item;
}

RMETH(R_ring_try_get) { return get_common(r, args, nargs, 0); }

RMETH(R_ring_get_locked) { return get_common(r, args, nargs, 1); }

RMETH(R_ring_put_many) {
    ring_t g;
    long long off, start;
    if (arg_count("ring_put_many", nargs, 3, 3) < 0 || arg_ll(args[0], &off) < 0 ||
        arg_ll(args[2], &start) < 0)
        return NULL;
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "ring_put_many() needs a list");
        return NULL;
    }
    if (ring_open(r, off, &g) < 0) return NULL;
    PyObject *items = args[1];
    Py_ssize_t i = start < 0 ? 0 : (Py_ssize_t)start, end = PyList_GET_SIZE(items);
    if (ring_enter(r, &g) < 0) return NULL;
    uint64_t t0 = atomic_load_explicit(g.tail, memory_order_relaxed), t = t0, nt;
    /* load-acquire; pairs with the consumer's store-release of the head */
    uint64_t h = atomic_load_explicit(g.head, memory_order_acquire);
    int corrupt = ring_used(&g, h, t0) == UINT64_MAX;
    if (corrupt) ring_corrupt(g.off, BAD_WORDS, h, t0);
    for (; !corrupt && i < end; i++) { /* no Python code runs here: the list stays as it is */
        PyObject *it = PyList_GET_ITEM(items, i);
        if (!PyBytes_CheckExact(it)) break;
        uint64_t n = (uint64_t)PyBytes_GET_SIZE(it);
        if (!ring_write(&g, t, h, PyBytes_AS_STRING(it), n, &nt)) break;
        t = nt;
    }
    if (t != t0) atomic_store_explicit(g.tail, t, memory_order_release); /* one commit */
    if (ring_leave(r, &g) < 0 || corrupt) return NULL;
    return PyLong_FromSsize_t(i);
}

RMETH(R_ring_get_many) {
    ring_t g;
    long long off, max;
    if (arg_count("ring_get_many", nargs, 2, 2) < 0 || arg_ll(args[0], &off) < 0 ||
        arg_ll(args[1], &max) < 0)
        return NULL;
    PyObject *out = PyList_New(0); /* before the ring is checked: it can start a collection */
    if (out == NULL) return NULL;
    if (ring_open(r, off, &g) < 0 || ring_enter(r, &g) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    region_hold(r); /* out-of-band tuples can start a collection (see get_common) */
    uint64_t h0 = atomic_load_explicit(g.head, memory_order_relaxed), h = h0;
    /* load-acquire; pairs with the producer's commit store of the tail */
    uint64_t t = atomic_load_explicit(g.tail, memory_order_acquire);
    int failed = 0;
    /* each frame takes at least one word of the bytes in use, and frame_at refuses one that
     * runs past the tail: at most cap / FRAME_HEADER steps */
    for (long long k = 0; k < max && h != t; k++) {
        frame_t f;
        const char *bad = frame_at(&g, h, ring_used(&g, h, t), &f);
        if (bad != NULL) ring_corrupt(g.off, bad, h, t);
        PyObject *item = bad != NULL ? NULL : frame_item(&f);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            failed = 1;
            break;
        }
        Py_DECREF(item);
        h = f.nh;
    }
    /* on an error nothing is consumed: the frames read so far stay in the ring */
    if (!failed && h != h0) atomic_store_explicit(g.head, h, memory_order_release); /* frees */
    if (ring_leave(r, &g) < 0) failed = 1;
    region_drop(r);
    if (failed) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

RMETH(R_ring_len) {
    ring_t g;
    long long off;
    if (arg_count("ring_len", nargs, 1, 1) < 0 || arg_ll(args[0], &off) < 0 ||
        ring_open(r, off, &g) < 0)
        return NULL;
    /* a snapshot, taken without the ring's side: only the counts are used, and any values of
     * them are harmless */
    uint64_t t = atomic_load_explicit(g.tail, memory_order_acquire);
    uint64_t h = atomic_load_explicit(g.head, memory_order_acquire);
    return PyLong_FromUnsignedLongLong(((t >> POS_BITS) - (h >> POS_BITS)) & M24);
}

/* Every frame of ring src moved, byte for byte, to the end of ring dst (inline and out-of-band
 * frames alike: an out-of-band block changes hands with its frame); the number moved. The
 * caller holds src's lock and dst is not yet shared. dst is committed with one tail store,
 * then src is emptied with one head store: a process killed between the two leaves both
 * holding the frames, a killed mover's readers see src unchanged (its lock is then recovered
 * with src as it was, and dst is garbage nobody names). Stops early when dst is full. */
RMETH(R_ring_move_locked) {
    ring_t s, d;
    long long soff, doff;
    if (arg_count("ring_move_locked", nargs, 2, 2) < 0 || arg_ll(args[0], &soff) < 0 ||
        arg_ll(args[1], &doff) < 0 || ring_open(r, soff, &s) < 0 || ring_open(r, doff, &d) < 0)
        return NULL;
    uint64_t h = atomic_load_explicit(s.head, memory_order_relaxed);
    uint64_t st = atomic_load_explicit(s.tail, memory_order_acquire);
    uint64_t t0 = atomic_load_explicit(d.tail, memory_order_relaxed), t = t0;
    uint64_t dh = atomic_load_explicit(d.head, memory_order_acquire);
    uint64_t dused = ring_used(&d, dh, t0);
    if (dused == UINT64_MAX) {
        ring_corrupt(doff, BAD_WORDS, dh, t0);
        return NULL;
    }
    long n = 0;
    /* at most s.cap / FRAME_HEADER steps: see ring_get_many */
    while (h != st) {
        frame_t f;
        const char *bad = frame_at(&s, h, ring_used(&s, h, st), &f);
        if (bad != NULL) {
            ring_corrupt(soff, bad, h, st);
            return NULL;
        }
        uint64_t need = f.size, tpos = t & M40, i = tpos & d.mask, rem = d.cap - i;
        uint64_t skip = rem >= need ? 0 : rem;
        if (d.cap - dused < need + skip) break; /* dst full */
        char *q = d.data + i;
        if (skip) {
            *(uint64_t *)q = (uint64_t)F_WRAP << KIND_SHIFT;
            q = d.data;
        }
        memmove(q, f.p, need); /* rings laid over each other by a corrupt word may overlap */
        t = ring_next(t, tpos, skip + need);
        dused += skip + need;
        h = f.nh;
        n++;
    }
    if (t != t0) {
        atomic_store_explicit(d.tail, t, memory_order_release); /* one commit */
        atomic_store_explicit(s.head, h, memory_order_release); /* then src lets them go */
    }
    return PyLong_FromLong(n);
}
