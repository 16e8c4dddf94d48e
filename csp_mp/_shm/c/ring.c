/* Rings of framed messages: the block layout, frame format and commit rules of ring_frames.py
 *
 * Twin (the Python path of the same protocol, the readable specification):
 *   csp_mp/_shm/ring_frames.py, ring_batch.py and ring.py.
 * (runs of frames: ring_batch.py; locked and SPSC rings: ring.py).
 *
 * Block: line 0 constants (magic, capacity, lock index, kind); line 1 the head word; line 2 the
 * tail word; then `capacity` data bytes. Head and tail words pack count << 40 | position. A frame
 * is a header word (kind << 32 | length) and its payload padded to 8 bytes.
 *
 * Invariants (those Python modules'):
 *   - a producer writes the frame, then commits it with ONE store-release of the tail word;
 *     a consumer copies the frame out, then frees it with ONE store-release of the head word. A
 *     process killed before its commit store leaves the ring as it was.
 *   - locked rings: head and tail change only under the ring's lock; SPSC rings: only the one
 *     producer stores the tail and only the one consumer stores the head.
 *   - this file writes inline frames only; out-of-band messages (bigger than capacity/2 - 8)
 *     need the arena allocator, which stays in Python: put returns -1 for them and get returns
 *     an out-of-band frame as (offset, length) for the caller to fetch and free.
 */
#include "core.h"

#include <string.h>

int ring_open(Region *r, long long off, ring_t *g) {
    if (region_span(r, off, RING_HEADER, LINE) < 0) return -1;
    aword *w = word_at(r, off);
    /* load-acquire; pairs with the creator's final store of the magic (Ring.create) */
    if (atomic_load_explicit(&w[RW_MAGIC], memory_order_acquire) != RING_MAGIC) {
        PyErr_Format(PyExc_ValueError, "no ring at arena offset %lld", off);
        return -1;
    }
    uint64_t cap = atomic_load_explicit(&w[RW_CAP], memory_order_relaxed);
    if (cap < 64 || (cap & (cap - 1)) || cap > (uint64_t)(r->size - off - RING_HEADER)) {
        PyErr_Format(PyExc_ValueError, "corrupt ring at arena offset %lld", off);
        return -1;
    }
    g->cap = cap;
    g->mask = cap - 1;
    g->max_inline = cap / 2 - 8;
    g->lock = atomic_load_explicit(&w[RW_LOCK], memory_order_relaxed);
    g->kind = atomic_load_explicit(&w[RW_KIND], memory_order_relaxed);
    if (g->kind == RING_LOCKED && lock_index_ok(r, (long long)g->lock) < 0) return -1;
    g->head = word_at(r, off + RING_HEAD_LINE * LINE);
    g->tail = word_at(r, off + RING_TAIL_LINE * LINE);
    g->data = r->base + off + RING_HEADER;
    return 0;
}

int ring_fits(ring_t *g, uint64_t t, uint64_t h, uint64_t n) {
    uint64_t need = 8 + ((n + 7) & ~UINT64_C(7));
    uint64_t tpos = t & M40, rem = g->cap - (tpos & g->mask);
    uint64_t skip = rem >= need ? 0 : rem;
    return n <= g->max_inline && g->cap - ((tpos - (h & M40)) & M40) >= need + skip;
}

int ring_write(ring_t *g, uint64_t t, uint64_t h, const char *p, uint64_t n, uint64_t *nt) {
    uint64_t need = 8 + ((n + 7) & ~UINT64_C(7));
    uint64_t tpos = t & M40, i = tpos & g->mask, rem = g->cap - i;
    uint64_t skip = rem >= need ? 0 : rem;
    if (g->cap - ((tpos - (h & M40)) & M40) < need + skip) return 0;
    char *q = g->data + i;
    if (skip) {
        *(uint64_t *)q = (uint64_t)F_WRAP << 32; /* unpublished until the tail store */
        q = g->data;
    }
    *(uint64_t *)q = (uint64_t)F_INLINE << 32 | n;
    memcpy(q + 8, p, n);
    *nt = (((t >> 40) + 1) & M24) << 40 | ((tpos + skip + need) & M40);
    return 1;
}

static char *frame_at(ring_t *g, uint64_t h, uint64_t *hpos, uint64_t *hdr) {
    *hpos = h & M40;
    uint64_t i = *hpos & g->mask;
    char *p = g->data + i;
    *hdr = *(uint64_t *)p; /* ordered after the tail load that showed this frame */
    if (*hdr >> 32 == F_WRAP) {
        *hpos += g->cap - i;
        p = g->data;
        *hdr = *(uint64_t *)p;
    }
    return p;
}

int ring_peek_kind(ring_t *g, uint64_t h) {
    uint64_t hpos, hdr;
    frame_at(g, h, &hpos, &hdr);
    return (int)(hdr >> 32);
}

PyObject *ring_read(ring_t *g, uint64_t h, uint64_t *nh) {
    uint64_t hpos, hdr, need;
    char *p = frame_at(g, h, &hpos, &hdr);
    uint64_t n = hdr & M32;
    PyObject *item;
    if (hdr >> 32 == F_OOB) {
        item = Py_BuildValue("(KK)", (unsigned long long)((uint64_t *)p)[1],
                             (unsigned long long)((uint64_t *)p)[2]);
        need = 24;
    } else if (hdr >> 32 == F_INLINE && n <= g->cap - (uint64_t)(p - g->data) - 8) {
        item = PyBytes_FromStringAndSize(p + 8, (Py_ssize_t)n);
        need = 8 + ((n + 7) & ~UINT64_C(7));
    } else {
        PyErr_SetString(PyExc_ValueError, "corrupt ring frame");
        return NULL;
    }
    *nh = (((h >> 40) + 1) & M24) << 40 | ((hpos + need) & M40);
    return item;
}

int ring_view(ring_t *g, uint64_t h, const char **p, uint64_t *n, uint64_t *nh) {
    uint64_t hpos, hdr;
    char *f = frame_at(g, h, &hpos, &hdr);
    if (hdr >> 32 == F_OOB) return 0;
    *n = hdr & M32;
    if (hdr >> 32 != F_INLINE || *n > g->cap - (uint64_t)(f - g->data) - 8) {
        PyErr_SetString(PyExc_ValueError, "corrupt ring frame");
        return -1;
    }
    *p = f + 8;
    *nh = (((h >> 40) + 1) & M24) << 40 | ((hpos + 8 + ((*n + 7) & ~UINT64_C(7))) & M40);
    return 1;
}

/* ---- taking the ring's side: the lock for a locked ring, nothing for SPSC */

static int ring_enter(Region *r, ring_t *g) {
    return g->kind == RING_LOCKED ? lock_take(r, (long long)g->lock) : 0;
}

static int ring_leave(Region *r, ring_t *g) {
    return g->kind == RING_LOCKED ? lock_give(r, (long long)g->lock) : 0;
}

static int ring_arg(Region *r, PyObject *o, ring_t *g) {
    long long off;
    if (arg_ll(o, &off) < 0) return -1;
    return ring_open(r, off, g);
}

/* 1 put, 0 full, -1 not inline-sized; caller has the producer side */
static int put_one(ring_t *g, Py_buffer *b) {
    if ((uint64_t)b->len > g->max_inline) return -1;
    uint64_t t = atomic_load_explicit(g->tail, memory_order_relaxed);
    /* load-acquire; pairs with the consumer's store-release of the head */
    uint64_t h = atomic_load_explicit(g->head, memory_order_acquire), nt;
    if (!ring_write(g, t, h, b->buf, (uint64_t)b->len, &nt)) return 0;
    atomic_store_explicit(g->tail, nt, memory_order_release); /* commit; pairs with get's load */
    return 1;
}

/* the oldest frame or Py_None; caller has the consumer side */
static PyObject *get_one(ring_t *g) {
    uint64_t h = atomic_load_explicit(g->head, memory_order_relaxed), nh;
    /* load-acquire; pairs with the producer's commit store of the tail */
    if (h == atomic_load_explicit(g->tail, memory_order_acquire)) Py_RETURN_NONE;
    PyObject *item = ring_read(g, h, &nh);
    if (item != NULL) atomic_store_explicit(g->head, nh, memory_order_release); /* frees it */
    return item;
}

static PyObject *put_common(Region *r, PyObject *const *args, Py_ssize_t nargs, int locked) {
    ring_t g;
    Py_buffer b;
    if (arg_count("ring_try_put", nargs, 2, 2) < 0 || ring_arg(r, args[0], &g) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0) return NULL;
    int res = -1;
    if ((uint64_t)b.len <= g.max_inline) {
        if (!locked && ring_enter(r, &g) < 0) {
            PyBuffer_Release(&b);
            return NULL;
        }
        res = put_one(&g, &b);
        if (!locked && ring_leave(r, &g) < 0) res = -2;
    }
    PyBuffer_Release(&b);
    return res == -2 ? NULL : PyLong_FromLong(res);
}

int ring_put_bytes(Region *r, ring_t *g, const char *p, uint64_t n) {
    if (n > g->max_inline) return 0;
    if (ring_enter(r, g) < 0) return -1;
    uint64_t t = atomic_load_explicit(g->tail, memory_order_relaxed), nt;
    /* load-acquire; pairs with the consumer's store-release of the head */
    uint64_t h = atomic_load_explicit(g->head, memory_order_acquire);
    int put = ring_write(g, t, h, p, n, &nt);
    if (put) atomic_store_explicit(g->tail, nt, memory_order_release); /* commit */
    if (ring_leave(r, g) < 0) return -1;
    return put;
}

RMETH(R_ring_try_put) { return put_common(r, args, nargs, 0); }

RMETH(R_ring_put_locked) { return put_common(r, args, nargs, 1); }

static PyObject *get_common(Region *r, PyObject *const *args, Py_ssize_t nargs, int locked) {
    ring_t g;
    if (arg_count("ring_try_get", nargs, 1, 1) < 0 || ring_arg(r, args[0], &g) < 0) return NULL;
    if (!locked && ring_enter(r, &g) < 0) return NULL;
    region_hold(r); /* an out-of-band frame's tuple can start a collection */
    PyObject *item = get_one(&g);
    if (!locked && ring_leave(r, &g) < 0) Py_CLEAR(item);
    region_drop(r);
    return item;
}

RMETH(R_ring_try_get) { return get_common(r, args, nargs, 0); }

RMETH(R_ring_get_locked) { return get_common(r, args, nargs, 1); }

RMETH(R_ring_put_many) {
    ring_t g;
    long long start;
    if (arg_count("ring_put_many", nargs, 3, 3) < 0 || ring_arg(r, args[0], &g) < 0 ||
        arg_ll(args[2], &start) < 0)
        return NULL;
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "ring_put_many() needs a list");
        return NULL;
    }
    PyObject *items = args[1];
    Py_ssize_t i = start < 0 ? 0 : (Py_ssize_t)start, end = PyList_GET_SIZE(items);
    if (ring_enter(r, &g) < 0) return NULL;
    uint64_t t0 = atomic_load_explicit(g.tail, memory_order_relaxed), t = t0, nt;
    /* load-acquire; pairs with the consumer's store-release of the head */
    uint64_t h = atomic_load_explicit(g.head, memory_order_acquire);
    for (; i < end; i++) {
        PyObject *it = PyList_GET_ITEM(items, i);
        if (!PyBytes_CheckExact(it)) break;
        uint64_t n = (uint64_t)PyBytes_GET_SIZE(it);
        if (n > g.max_inline || !ring_write(&g, t, h, PyBytes_AS_STRING(it), n, &nt)) break;
        t = nt;
    }
    if (t != t0) atomic_store_explicit(g.tail, t, memory_order_release); /* one commit */
    if (ring_leave(r, &g) < 0) return NULL;
    return PyLong_FromSsize_t(i);
}

RMETH(R_ring_get_many) {
    ring_t g;
    long long max;
    if (arg_count("ring_get_many", nargs, 2, 2) < 0 || arg_ll(args[1], &max) < 0) return NULL;
    PyObject *out = PyList_New(0); /* before the ring is checked: it can start a collection */
    if (out == NULL) return NULL;
    if (ring_arg(r, args[0], &g) < 0 || ring_enter(r, &g) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    region_hold(r); /* the list and out-of-band tuples can start a collection */
    uint64_t h0 = atomic_load_explicit(g.head, memory_order_relaxed), h = h0, nh;
    /* load-acquire; pairs with the producer's commit store of the tail */
    uint64_t t = atomic_load_explicit(g.tail, memory_order_acquire);
    int failed = 0;
    for (long long k = 0; k < max && h != t; k++) {
        PyObject *item = ring_read(&g, h, &nh);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            failed = 1;
            break;
        }
        Py_DECREF(item);
        h = nh;
    }
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
    if (arg_count("ring_len", nargs, 1, 1) < 0 || ring_arg(r, args[0], &g) < 0) return NULL;
    uint64_t t = atomic_load_explicit(g.tail, memory_order_acquire);
    uint64_t h = atomic_load_explicit(g.head, memory_order_acquire);
    return PyLong_FromUnsignedLongLong(((t >> 40) - (h >> 40)) & M24);
}

/* Every frame of ring src moved, byte for byte, to the end of ring dst (inline and out-of-band
 * frames alike: an out-of-band block changes hands with its frame); the number moved. The
 * caller holds src's lock and dst is not yet shared. dst is committed with one tail store,
 * then src is emptied with one head store: a process killed between the two leaves both
 * holding the frames, a killed mover's readers see src unchanged (its lock is then recovered
 * with src as it was, and dst is garbage nobody names). Stops early when dst is full. */
RMETH(R_ring_move_locked) {
    ring_t s, d;
    if (arg_count("ring_move_locked", nargs, 2, 2) < 0 || ring_arg(r, args[0], &s) < 0 ||
        ring_arg(r, args[1], &d) < 0)
        return NULL;
    uint64_t h = atomic_load_explicit(s.head, memory_order_relaxed);
    uint64_t st = atomic_load_explicit(s.tail, memory_order_acquire);
    uint64_t t0 = atomic_load_explicit(d.tail, memory_order_relaxed), t = t0;
    uint64_t dh = atomic_load_explicit(d.head, memory_order_acquire);
    long n = 0;
    while (h != st) {
        uint64_t hpos, hdr, need;
        char *p = frame_at(&s, h, &hpos, &hdr);
        if (hdr >> 32 == F_OOB) {
            need = 24;
        } else if (hdr >> 32 == F_INLINE && (hdr & M32) <= s.cap - (uint64_t)(p - s.data) - 8) {
            need = 8 + (((hdr & M32) + 7) & ~UINT64_C(7));
        } else {
            PyErr_SetString(PyExc_ValueError, "corrupt ring frame");
            return NULL;
        }
        uint64_t tpos = t & M40, i = tpos & d.mask, rem = d.cap - i;
        uint64_t skip = rem >= need ? 0 : rem;
        if (d.cap - ((tpos - (dh & M40)) & M40) < need + skip) break; /* dst full */
        char *q = d.data + i;
        if (skip) {
            *(uint64_t *)q = (uint64_t)F_WRAP << 32;
            q = d.data;
        }
        memcpy(q, p, need);
        t = (((t >> 40) + 1) & M24) << 40 | ((tpos + skip + need) & M40);
        h = (((h >> 40) + 1) & M24) << 40 | ((hpos + need) & M40);
        n++;
    }
    if (t != t0) {
        atomic_store_explicit(d.tail, t, memory_order_release); /* one commit */
        atomic_store_explicit(s.head, h, memory_order_release); /* then src lets them go */
    }
    return PyLong_FromLong(n);
}
