/* Task frames for the common go() call, laid out in C: the msgpack array
 *
 * Twin (the Python path of the same protocol, the readable specification): csp_mp/_mp/tasks.py
 *   (pack, unpack) and csp_mp/_mp/runq.py (place).
 * [seq, owner, digest, fn_bytes, args, warn, site, creator] (TASK_ITEMS items, layout.py) that
 * csp_mp/_mp/tasks.py's pack() makes with msgspec, for args made only of ints, floats, str,
 * bool, None, small bytes and untyped channels
 * (each a msgpack extension 1 holding its arena offset, 8 bytes little-endian). Any other
 * argument makes encode() return None, and the caller takes pack()'s general path; pack() is the
 * specification of the frame, and msgspec decodes both alike.
 *
 * A frame that names channels counts one in-flight reference on each (the channel block's
 * reference word, _W_REFS in csp_mp/_chan/block.py), once the frame is complete: a frame
 * given up half-way (None) has counted nothing. See the protocol in csp_mp/_mp/promote.py.
 *
 * Invariants:
 *   - a frame's names are counted (one reference each on the block's reference word) only once
 *     the frame exists, right after every word was checked with region_span and with no Python
 *     code in between; a frame that then fails to be queued (Spawner.go) gives its counts back,
 *     and its entry is taken back out; a frame already in the ring keeps them (it is handed
 *     over: an error after that, a corrupt hint word, gives nothing back).
 *   - a frame is decoded whole before its names are consumed: decode_many takes a count off
 *     only for a frame it returns; the frame it stops at has consumed nothing.
 *   - every Python object used across a call that can run Python code (an attribute, a call,
 *     the allocation of a tuple, which can start a collection, a deque's append) is held by a
 *     strong reference: decode_many's cached callable and channel, each decoded argument;
 *     spawner_made reads its last answer only after the site's resolve() ran. No pointer into
 *     the arena outlives such a call either: publish() opens the ring and checks the hint word
 *     again after the append of the entry.
 *   - a word read from the arena is a value to check, never an index as it is: the hint word
 *     names a P (1..number of bells) or raises ValueError.
 *   - TaskEncoder and Spawner are made whole by their tp_new and take part in the cyclic GC; a
 *     Spawner the GC cleared raises instead of running. Spawner's tp_new refuses arguments
 *     that do not fit together (a ring without a hint word, bells without one) and containers
 *     other than collections.deque itself, whose append and pop it binds once.
 *   - no attribute of a Python object is read and no method is called by name: a shared
 *     channel's offset comes from its HandleRef (handles.c's handle_offset), anything else from
 *     chan_ext, the callable given at construction; the deques' methods are bound once.
 */
#include "core.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *chan_type; /* csp_mp.Chan */
    PyObject *chan_ext;  /* chan -> arena offset (int), or None if it cannot be named */
    Py_ssize_t oob_min;  /* bytes of at least this size go through the codec */
    PyObject *region;    /* the arena's Region (its reference words), or NULL */
} TaskEncoder;

#define MAX_CHANS 16   /* channels one plain frame may name; more take the codec's path */

/* A frame being written: in `stack` (the caller's array of STACK_BUF bytes) until it outgrows
 * it, then in PyMem memory (freed by buf_free). */
#define STACK_BUF 512
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char *stack;
} buf_t;

static int grow(buf_t *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = b->cap * 2 > b->len + need ? b->cap * 2 : b->len + need + 64;
    char *p = b->p == b->stack ? PyMem_Malloc((size_t)cap) : PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->stack && b->len) memcpy(p, b->p, (size_t)b->len);
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_free(buf_t *b) {
    if (b->p != b->stack) PyMem_Free(b->p);
}

static int put(buf_t *b, const void *src, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static int put_be(buf_t *b, unsigned char tag, uint64_t v, int nbytes) {
    unsigned char t[9];
    t[0] = tag;
    for (int i = 0; i < nbytes; i++) t[1 + i] = (unsigned char)(v >> (8 * (nbytes - 1 - i)));
    return put(b, t, 1 + nbytes);
}

static int put_ll(buf_t *b, long long v) {
    if (v >= 0) {
        if (v < 128) {
            unsigned char c = (unsigned char)v;
            return put(b, &c, 1);
        }
        if (v <= 0xff) return put_be(b, 0xcc, (uint64_t)v, 1);
        if (v <= 0xffff) return put_be(b, 0xcd, (uint64_t)v, 2);
        if (v <= 0xffffffffLL) return put_be(b, 0xce, (uint64_t)v, 4);
        return put_be(b, 0xcf, (uint64_t)v, 8);
    }
    if (v >= -32) {
        unsigned char c = (unsigned char)(int8_t)v;
        return put(b, &c, 1);
    }
    if (v >= -128) return put_be(b, 0xd0, (uint64_t)(uint8_t)(int8_t)v, 1);
    if (v >= -32768) return put_be(b, 0xd1, (uint64_t)(uint16_t)(int16_t)v, 2);
    if (v >= -2147483648LL) return put_be(b, 0xd2, (uint64_t)(uint32_t)(int32_t)v, 4);
    return put_be(b, 0xd3, (uint64_t)v, 8);
}

static int put_int(buf_t *b, PyObject *o) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1; /* beyond msgpack: not plain */
        }
        return put_be(b, 0xcf, u, 8);
    }
    if (overflow < 0) return 1;
    return put_ll(b, v);
}

static int put_raw(buf_t *b, const char *s, Py_ssize_t n, int is_str) {
    int r;
    if (is_str && n < 32) {
        unsigned char c = (unsigned char)(0xa0 | n);
        r = put(b, &c, 1);
    } else if (n <= 0xff) {
        r = put_be(b, is_str ? 0xd9 : 0xc4, (uint64_t)n, 1);
    } else if (n <= 0xffff) {
        r = put_be(b, is_str ? 0xda : 0xc5, (uint64_t)n, 2);
    } else {
        r = put_be(b, is_str ? 0xdb : 0xc6, (uint64_t)n, 4);
    }
    return r < 0 ? -1 : put(b, s, n);
}

static int put_array_header(buf_t *b, Py_ssize_t n) {
    if (n < 16) {
        unsigned char c = (unsigned char)(0x90 | n);
        return put(b, &c, 1);
    }
    if (n <= 0xffff) return put_be(b, 0xdc, (uint64_t)n, 2);
    return put_be(b, 0xdd, (uint64_t)n, 4);
}

static int put_str(buf_t *b, PyObject *o) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL) { /* a lone surrogate: the codec pickles it */
        PyErr_Clear();
        return 1;
    }
    return put_raw(b, s, n, 1);
}

/* 0 written, 1 not a plain argument, -1 error */
static int put_arg(TaskEncoder *self, buf_t *b, PyObject *o, long long *offs, int *noffs) {
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) return put_int(b, o);
    if (t == &PyUnicode_Type) return put_str(b, o);
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        uint64_t u;
        memcpy(&u, &d, 8);
        return put_be(b, 0xcb, u, 8);
    }
    if (o == Py_None || o == Py_True || o == Py_False) {
        unsigned char c = o == Py_None ? 0xc0 : o == Py_True ? 0xc3 : 0xc2;
        return put(b, &c, 1);
    }
    if (t == &PyBytes_Type) {
        if (PyBytes_GET_SIZE(o) >= self->oob_min) return 1;
        return put_raw(b, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o), 0);
    }
    if ((PyObject *)t == self->chan_type) {
        /* an untyped channel already shared: its HandleRef has the offset */
        PyObject *off = handle_offset(o, (Region *)self->region);
        if (off == NULL) {
            if (self->chan_ext == NULL) return 1; /* cleared by the GC: the codec's path */
            off = PyObject_CallOneArg(self->chan_ext, o);
        }
        if (off == NULL) return -1;
        if (off == Py_None) {
            Py_DECREF(off);
            return 1;
        }
        unsigned long long v = PyLong_AsUnsignedLongLong(off);
        Py_DECREF(off);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        if (*noffs == MAX_CHANS) return 1;
        offs[(*noffs)++] = (long long)v;
        unsigned char e[10] = {0xd7, CHAN_EXT};
        for (int i = 0; i < 8; i++) e[2 + i] = (unsigned char)(v >> (8 * i)); /* little-endian */
        return put(b, e, 10);
    }
    return 1;
}

/* the channel names a frame carries */
typedef struct {
    long long offs[MAX_CHANS];
    int n;
} names_t;

/* Add d to the reference word of every block `nm` names; 0, or -1 (nothing counted) when the
 * region cannot take them. No Python code runs between the checks and the adds. */
static int count_names(Region *reg, const names_t *nm, int64_t d) {
    for (int i = 0; i < nm->n; i++)
        if (nm->offs[i] > reg->size || region_span(reg, nm->offs[i] + REFS_BYTE, 8, 8) < 0)
            return -1;
    /* seq_cst, as Region.fetch_add: pairs with the receiving P's decrement (promote.py) */
    for (int i = 0; i < nm->n; i++)
        atomic_fetch_add_explicit(word_at(reg, nm->offs[i] + REFS_BYTE), (uint64_t)d,
                                  memory_order_seq_cst);
    return 0;
}

/* The frame (bytes, its names counted), None when an argument needs the codec, NULL on error;
 * the names it counted in *nm. `site` is the msgpack of [function, file, line] (None: nil),
 * `creator` the creating goroutine's id. */
static PyObject *encode_frame(TaskEncoder *self, PyObject *seq, PyObject *owner, PyObject *entry,
                              PyObject *targs, PyObject *site, long long creator, names_t *nm) {
    nm->n = 0;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 0)) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1)) ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 2))) {
        PyErr_SetString(PyExc_TypeError, "encode() needs entry = (digest, fn_bytes, warn)");
        return NULL;
    }
    if (!PyTuple_CheckExact(targs) && !PyList_CheckExact(targs)) Py_RETURN_NONE;
    /* strong references: an argument's chan_ext runs Python code, which may change a list */
    Py_INCREF(entry);
    PyObject *fast = PySequence_Tuple(targs);
    if (fast == NULL) {
        Py_DECREF(entry);
        return NULL;
    }
    PyObject *digest = PyTuple_GET_ITEM(entry, 0), *fnb = PyTuple_GET_ITEM(entry, 1);
    int has_site = site != NULL && PyBytes_CheckExact(site);
    char stack[STACK_BUF];
    buf_t b = {stack, 0, STACK_BUF, stack};
    PyObject *res = NULL;
    int r = grow(&b, 80 + PyBytes_GET_SIZE(digest) + PyBytes_GET_SIZE(fnb) +
                         (has_site ? PyBytes_GET_SIZE(site) : 0));
    Py_ssize_t n = PyTuple_GET_SIZE(fast);
    if (!r) r = put_array_header(&b, TASK_ITEMS);
    if (!r) r = put_int(&b, seq);
    if (!r) r = put_int(&b, owner);
    if (!r) r = put_raw(&b, PyBytes_AS_STRING(digest), PyBytes_GET_SIZE(digest), 0);
    if (!r) r = put_raw(&b, PyBytes_AS_STRING(fnb), PyBytes_GET_SIZE(fnb), 0);
    if (!r) r = put_array_header(&b, n);
    for (Py_ssize_t i = 0; !r && i < n; i++)
        r = put_arg(self, &b, PyTuple_GET_ITEM(fast, i), nm->offs, &nm->n);
    if (!r) r = put_str(&b, PyTuple_GET_ITEM(entry, 2));
    if (!r && has_site) r = put(&b, PyBytes_AS_STRING(site), PyBytes_GET_SIZE(site));
    if (!r && !has_site) r = put(&b, "\xc0", 1); /* nil: no site */
    if (!r) r = put_ll(&b, creator);
    if (r == 0) {
        res = PyBytes_FromStringAndSize(b.p, b.len);
        Region *reg = (Region *)self->region;
        if (res != NULL && reg != NULL && count_names(reg, nm, 1) < 0) Py_CLEAR(res);
    } else if (r == 1) {
        res = Py_NewRef(Py_None);
    }
    if (res == NULL || res == Py_None || self->region == NULL) nm->n = 0; /* nothing counted */
    buf_free(&b);
    Py_DECREF(fast);
    Py_DECREF(entry);
    return res;
}

/* made = (site, creator) as G.made (csp_mp/_hub/g.py): the site's msgpack bytes or None, and
 * the creator's id; 0, or -1 with TypeError */
static int made_parts(PyObject *made, PyObject **site, long long *creator) {
    if (!PyTuple_CheckExact(made) || PyTuple_GET_SIZE(made) != 2 ||
        arg_ll(PyTuple_GET_ITEM(made, 1), creator) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "made must be (site bytes or None, creator id)");
        return -1;
    }
    *site = PyTuple_GET_ITEM(made, 0);
    return 0;
}

static PyObject *TaskEncoder_encode(TaskEncoder *self, PyObject *const *args, Py_ssize_t nargs) {
    /* encode(seq, owner, entry, args, made=(None, 0)): entry is pickle_fn's
     * (digest, fn_bytes, warn), made the site and creator (made_parts) */
    names_t nm;
    PyObject *site = NULL;
    long long creator = 0;
    if (arg_count("encode", nargs, 4, 5) < 0) return NULL;
    if (nargs == 5 && made_parts(args[4], &site, &creator) < 0) return NULL;
    return encode_frame(self, args[0], args[1], args[2], args[3], site, creator, &nm);
}


/* ---------------------------------------------------------------- decoding stolen frames
 *
 * decode_many(frames, start, fns, names) reads frames laid out as above (by encode() or by
 * msgspec, which writes the same msgpack) from frames[start] on, and returns (fn, args, made)
 * for each (made: G.made, (the site's msgpack bytes or None, the creator's id)), stopping
 * before the first frame that is not plain, whose callable is not known here
 * (fns: digest -> fn) or has a warning to give, or that names a channel without a live handle
 * here (names: the 8 name bytes -> weakref to the handle): the Python path takes that one
 * (tasks.unpack_items), which makes the handle, and calls again for the rest. A frame decoded
 * here consumes its channel names (one reference each off the channel's word, as the Python
 * path's HandleRef.drop); the frame it stops at has consumed nothing. A malformed frame stops
 * it too: the Python path reports it.
 */

typedef struct {
    const unsigned char *p, *end;
} rd_t;

/* what one decode_many call looked up last: a batch of frames mostly names one callable and
 * the same channels. Strong references (the allocation of a tuple can start a collection, which
 * runs Python code), dropped when the call returns. */
typedef struct {
    unsigned char digest[32];
    Py_ssize_t digest_len;
    PyObject *fn; /* from fns; NULL: none cached */
    unsigned char name[8];
    PyObject *ch;   /* the handle of a live weakref in names; NULL: none cached */
    PyObject *site; /* the last site's bytes (a batch mostly comes from one go() line) */
} cache_t;

static int rd_n(rd_t *r, Py_ssize_t n, const unsigned char **out) {
    if (r->end - r->p < n) return -1;
    *out = r->p;
    r->p += n;
    return 0;
}

static int rd_be(rd_t *r, int nbytes, uint64_t *v) {
    const unsigned char *q;
    if (rd_n(r, nbytes, &q) < 0) return -1;
    uint64_t x = 0;
    for (int i = 0; i < nbytes; i++) x = (x << 8) | q[i];
    *v = x;
    return 0;
}

/* the length of a raw (str or bin) item, is_str telling which; -1 not one */
static int rd_raw(rd_t *r, int *is_str, const unsigned char **s, Py_ssize_t *n) {
    const unsigned char *t;
    uint64_t len;
    if (rd_n(r, 1, &t) < 0) return -1;
    unsigned char c = t[0];
    if ((c & 0xe0) == 0xa0) {
        *is_str = 1;
        len = c & 0x1f;
    } else if (c == 0xd9 || c == 0xc4) {
        *is_str = c == 0xd9;
        if (rd_be(r, 1, &len) < 0) return -1;
    } else if (c == 0xda || c == 0xc5) {
        *is_str = c == 0xda;
        if (rd_be(r, 2, &len) < 0) return -1;
    } else if (c == 0xdb || c == 0xc6) {
        *is_str = c == 0xdb;
        if (rd_be(r, 4, &len) < 0) return -1;
    } else {
        return -1;
    }
    if ((uint64_t)(r->end - r->p) < len) return -1;
    *n = (Py_ssize_t)len;
    return rd_n(r, *n, s);
}

static int rd_uint_v(rd_t *r, uint64_t *v) { /* an unsigned int */
    const unsigned char *t;
    if (rd_n(r, 1, &t) < 0) return -1;
    if (t[0] < 0x80) {
        *v = t[0];
        return 0;
    }
    if (t[0] >= 0xcc && t[0] <= 0xcf) return rd_be(r, 1 << (t[0] - 0xcc), v);
    return -1;
}

static int rd_uint(rd_t *r) { /* skips an unsigned int (seq, owner) */
    uint64_t v;
    return rd_uint_v(r, &v);
}

/* The site item, [function, file, line] or nil: a new reference to its bytes (the cached ones
 * when equal) or to None; NULL with no exception when malformed, with one on error. */
static PyObject *rd_site(rd_t *r, cache_t *cache) {
    const unsigned char *start = r->p, *t, *s;
    int is_str;
    Py_ssize_t n;
    if (rd_n(r, 1, &t) < 0) return NULL;
    if (t[0] == 0xc0) return Py_NewRef(Py_None);
    if (t[0] != 0x93 || rd_raw(r, &is_str, &s, &n) < 0 || !is_str ||
        rd_raw(r, &is_str, &s, &n) < 0 || !is_str || rd_uint(r) < 0)
        return NULL;
    Py_ssize_t len = r->p - start;
    PyObject *c = cache->site;
    if (c != NULL && PyBytes_GET_SIZE(c) == len && memcmp(PyBytes_AS_STRING(c), start, len) == 0)
        return Py_NewRef(c);
    PyObject *site = PyBytes_FromStringAndSize((const char *)start, len);
    if (site != NULL) Py_XSETREF(cache->site, Py_NewRef(site));
    return site;
}

/* one argument: a new reference, NULL with no exception when not plain (or malformed), NULL
 * with an exception on error; a channel's offset goes to offs */
static PyObject *rd_arg(rd_t *r, PyObject *names, long long *offs, int *noffs,
                        PyObject **handles, cache_t *cache) {
    const unsigned char *t;
    uint64_t v;
    if (r->p >= r->end) return NULL;
    unsigned char c = *r->p;
    if (c < 0x80 || c >= 0xe0) {
        r->p++;
        return PyLong_FromLong(c < 0x80 ? (long)c : (long)(int8_t)c);
    }
    if (c >= 0xcc && c <= 0xcf) {
        r->p++;
        if (rd_be(r, 1 << (c - 0xcc), &v) < 0) return NULL;
        return PyLong_FromUnsignedLongLong(v);
    }
    if (c >= 0xd0 && c <= 0xd3) {
        int nb = 1 << (c - 0xd0);
        r->p++;
        if (rd_be(r, nb, &v) < 0) return NULL;
        int64_t sv = nb == 1 ? (int8_t)v : nb == 2 ? (int16_t)v : nb == 4 ? (int32_t)v : (int64_t)v;
        return PyLong_FromLongLong(sv);
    }
    if (c == 0xc0 || c == 0xc2 || c == 0xc3) {
        r->p++;
        return Py_NewRef(c == 0xc0 ? Py_None : c == 0xc3 ? Py_True : Py_False);
    }
    if (c == 0xcb) {
        r->p++;
        if (rd_be(r, 8, &v) < 0) return NULL;
        double d;
        memcpy(&d, &v, 8);
        return PyFloat_FromDouble(d);
    }
    if (c == 0xd7) { /* fixext 8: a channel name */
        if (rd_n(r, 10, &t) < 0 || t[1] != CHAN_EXT || *noffs == MAX_CHANS) return NULL;
        PyObject *ch = cache->ch;
        if (ch == NULL || memcmp(cache->name, t + 2, 8) != 0) {
            PyObject *key = PyBytes_FromStringAndSize((const char *)t + 2, 8);
            if (key == NULL) return NULL;
            PyObject *ref = PyDict_GetItemWithError(names, key); /* borrowed */
            Py_DECREF(key);
            if (ref == NULL || !PyWeakref_Check(ref)) return NULL;
            ch = PyWeakref_GetObject(ref); /* borrowed; None once dead */
            if (ch == NULL || ch == Py_None) return NULL;
            memcpy(cache->name, t + 2, 8);
            Py_XSETREF(cache->ch, Py_NewRef(ch));
        }
        uint64_t off = 0;
        for (int i = 0; i < 8; i++) off |= (uint64_t)t[2 + i] << (8 * i);
        offs[*noffs] = (long long)off;
        handles[(*noffs)++] = Py_NewRef(ch);
        return Py_NewRef(ch);
    }
    int is_str;
    const unsigned char *s;
    Py_ssize_t n;
    if (rd_raw(r, &is_str, &s, &n) < 0) return NULL;
    if (is_str) {
        PyObject *o = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
        if (o == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
        return o;
    }
    return PyBytes_FromStringAndSize((const char *)s, n);
}

/* (fn, args) of one frame, or a new reference to the frame itself (see above); NULL on error */
static PyObject *decode_one(TaskEncoder *self, PyObject *frame, PyObject *fns, PyObject *names,
                            cache_t *cache) {
    if (!PyBytes_CheckExact(frame)) return Py_NewRef(frame);
    rd_t r = {(const unsigned char *)PyBytes_AS_STRING(frame),
              (const unsigned char *)PyBytes_AS_STRING(frame) + PyBytes_GET_SIZE(frame)};
    const unsigned char *t, *s;
    int is_str;
    Py_ssize_t n;
    uint64_t count;
    if (rd_n(&r, 1, &t) < 0 || t[0] != (0x90 | TASK_ITEMS) || rd_uint(&r) < 0 || rd_uint(&r) < 0 ||
        rd_raw(&r, &is_str, &s, &n) < 0 || is_str)
        return Py_NewRef(frame);
    PyObject *fn = cache->fn;
    if (fn == NULL || n != cache->digest_len || memcmp(cache->digest, s, (size_t)n) != 0) {
        PyObject *digest = PyBytes_FromStringAndSize((const char *)s, n);
        if (digest == NULL) return NULL;
        fn = PyDict_GetItemWithError(fns, digest); /* borrowed until just below */
        Py_DECREF(digest);
        if (fn == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(frame);
        if (n <= (Py_ssize_t)sizeof(cache->digest)) {
            memcpy(cache->digest, s, (size_t)n);
            cache->digest_len = n;
        } else {
            cache->digest_len = -1; /* held, but matched by no later frame */
        }
        Py_XSETREF(cache->fn, Py_NewRef(fn));
    }
    if (rd_raw(&r, &is_str, &s, &n) < 0 || is_str || rd_n(&r, 1, &t) < 0)
        return Py_NewRef(frame);
    if ((t[0] & 0xf0) == 0x90) {
        count = t[0] & 0x0f;
    } else if (t[0] == 0xdc) {
        if (rd_be(&r, 2, &count) < 0) return Py_NewRef(frame);
    } else {
        return Py_NewRef(frame); /* the codec's bytes: the Python path */
    }
    if (count > (uint64_t)(r.end - r.p)) return Py_NewRef(frame);
    PyObject *args = PyTuple_New((Py_ssize_t)count);
    if (args == NULL) return NULL;
    names_t nm = {.n = 0};
    PyObject *handles[MAX_CHANS];
    PyObject *res = NULL, *site = NULL, *made = NULL;
    for (uint64_t i = 0; i < count; i++) {
        PyObject *a = rd_arg(&r, names, nm.offs, &nm.n, handles, cache);
        if (a == NULL) goto done;
        PyTuple_SET_ITEM(args, (Py_ssize_t)i, a);
    }
    /* the warning: an empty str; the site, the creator's id, and nothing after them */
    if (rd_raw(&r, &is_str, &s, &n) < 0 || !is_str || n != 0) goto done;
    site = rd_site(&r, cache);
    uint64_t creator;
    if (site == NULL || rd_uint_v(&r, &creator) < 0 || r.p != r.end) goto done;
    PyObject *gid = PyLong_FromUnsignedLongLong(creator);
    made = gid == NULL ? NULL : PyTuple_Pack(2, site, gid);
    Py_XDECREF(gid);
    if (made == NULL) goto done;
    res = PyTuple_Pack(3, cache->fn, args, made);
    /* the names read (one count off each); the handle keeps its own (promote.py). A name the
     * region cannot take leaves the frame to the Python path, which reports it. */
    Region *reg = (Region *)self->region;
    if (res != NULL && reg != NULL && count_names(reg, &nm, -1) < 0) {
        PyErr_Clear();
        Py_CLEAR(res);
    }
done:
    Py_DECREF(args);
    Py_XDECREF(site);
    Py_XDECREF(made);
    for (int i = 0; i < nm.n; i++) Py_DECREF(handles[i]);
    if (res == NULL && !PyErr_Occurred()) res = Py_NewRef(frame);
    return res;
}

static PyObject *TaskEncoder_decode_many(TaskEncoder *self, PyObject *const *args,
                                         Py_ssize_t nargs) {
    long long start;
    if (arg_count("decode_many", nargs, 4, 4) < 0 || arg_ll(args[1], &start) < 0) return NULL;
    PyObject *frames = args[0], *fns = args[2], *names = args[3];
    if (!PyList_CheckExact(frames) || !PyDict_CheckExact(fns) || !PyDict_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "decode_many() needs a list, an int and two dicts");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    cache_t cache = {.fn = NULL, .ch = NULL, .site = NULL, .digest_len = 0};
    for (Py_ssize_t i = start < 0 ? 0 : (Py_ssize_t)start; i < PyList_GET_SIZE(frames); i++) {
        PyObject *frame = Py_NewRef(PyList_GET_ITEM(frames, i)); /* its bytes are read */
        PyObject *item = decode_one(self, frame, fns, names, &cache);
        int stop = item == frame; /* the Python path's */
        Py_DECREF(frame);
        if (stop) {
            Py_DECREF(item);
            break;
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
    }
    Py_XDECREF(cache.fn);
    Py_XDECREF(cache.ch);
    Py_XDECREF(cache.site);
    return out;
}

static PyObject *TaskEncoder_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *chan_type, *chan_ext, *region = Py_None;
    Py_ssize_t oob_min;
    static char *kwlist[] = {"chan_type", "chan_ext", "oob_min", "region", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOn|O:TaskEncoder", kwlist, &chan_type,
                                     &chan_ext, &oob_min, &region))
        return NULL;
    if (region != Py_None && !PyObject_TypeCheck(region, &Region_Type)) {
        PyErr_SetString(PyExc_TypeError, "TaskEncoder: region must be a Region or None");
        return NULL;
    }
    if (!PyCallable_Check(chan_ext)) {
        PyErr_SetString(PyExc_TypeError, "TaskEncoder: chan_ext must be callable");
        return NULL;
    }
    TaskEncoder *self = (TaskEncoder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->region = region == Py_None ? NULL : Py_NewRef(region);
    self->chan_type = Py_NewRef(chan_type);
    self->chan_ext = Py_NewRef(chan_ext);
    self->oob_min = oob_min;
    return (PyObject *)self;
}

static int TaskEncoder_traverse(TaskEncoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->chan_type);
    Py_VISIT(self->chan_ext);
    Py_VISIT(self->region);
    return 0;
}

/* Breaks cycles through chan_ext; chan_type and the region stay (neither can lead back to an
 * encoder), so a cleared encoder still encodes, only no channel it has not seen named. */
static int TaskEncoder_clear(TaskEncoder *self) {
    Py_CLEAR(self->chan_ext);
    return 0;
}

static void TaskEncoder_dealloc(TaskEncoder *self) {
    PyObject_GC_UnTrack(self);
    TaskEncoder_clear(self);
    Py_XDECREF(self->chan_type);
    Py_XDECREF(self->region);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef TaskEncoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))TaskEncoder_encode, METH_FASTCALL,
     "encode(seq, owner, entry, args, made=(None, 0)) -> bytes | None: the task frame, or None "
     "when an argument needs the codec; made = (site bytes or None, creator id)."},
    {"decode_many", (PyCFunction)(void (*)(void))TaskEncoder_decode_many, METH_FASTCALL,
     "decode_many(frames, start, fns, names) -> list: (fn, args, made) of frames[start:], up "
     "to the first that is not plain, whose callable is not in fns (digest -> fn) or whose "
     "channels are not live in names (name bytes -> weakref); that one consumed nothing."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject TaskEncoder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.TaskEncoder",
    .tp_basicsize = sizeof(TaskEncoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TaskEncoder(chan_type, chan_ext, oob_min, region=None): task frames of plain "
              "go() calls; with a region, each frame counts a reference on the channels it "
              "names.",
    .tp_new = TaskEncoder_new,
    .tp_dealloc = (destructor)TaskEncoder_dealloc,
    .tp_traverse = (traverseproc)TaskEncoder_traverse,
    .tp_clear = (inquiry)TaskEncoder_clear,
    .tp_methods = TaskEncoder_methods,
};

/* ---------------------------------------------------------------- where go() was called
 *
 * Sites(pkg, resolve) finds the user's call that makes a goroutine, for Go's "created by" line:
 * the innermost frame whose file is not under pkg (csp_mp's own directory, with its trailing
 * separator). Twin, the readable form: csp_mp/_hub/g.py (here, queued_here, site_bytes).
 *
 * here(f, creator) is G.made of a goroutine made on this P by a call under frame f: (code,
 * lasti, creator), resolved to a line only when printed; f's own when every frame from f out is
 * csp_mp's (a goroutine csp_mp starts on its own: the executor's queued tasks). The caller
 * passes the frame it knows to be the user's in the common case (go_local's caller), so that
 * nothing is walked: walking materializes a frame object per frame passed. The last answer for
 * a user's frame is given again while its code, offset and creator repeat.
 *
 * The Spawner asks it for the frame's site, the msgpack of [function, file, line] that
 * resolve(code, lasti) returns, kept here per (code, lasti) in SITE_SLOTS direct-mapped slots:
 * a loop calling go() on one line pays no Python call for it.
 */
#define SITE_SLOTS 64

typedef struct {
    PyObject *code; /* strong: its address stays its own while the slot holds it; NULL: empty */
    int lasti;
    PyObject *site; /* resolve(code, lasti) */
} site_slot;

typedef struct {
    PyObject_HEAD
    PyObject *pkg;     /* str */
    PyObject *resolve; /* (code, lasti) -> bytes */
    site_slot slots[SITE_SLOTS];
    PyObject *last;    /* here()'s last answer, given again while equal: a loop spawning */
    int last_lasti;
} Sites;

/* The user's frame, the innermost from f (borrowed) outward whose file is not under pkg, else
 * f itself (csp_mp started the goroutine on its own): a new reference to its code and its lasti;
 * 0 found, 2 f itself for want of a user's frame, 1 when f is NULL, -1 on error. */
static int user_frame(Sites *self, PyFrameObject *f, PyCodeObject **code, int *lasti) {
    Py_ssize_t plen;
    const char *pkg = PyUnicode_AsUTF8AndSize(self->pkg, &plen);
    if (pkg == NULL) return -1;
    PyFrameObject *start = f;
    Py_XINCREF(f);
    while (f != NULL) {
        PyCodeObject *c = PyFrame_GetCode(f);
        Py_ssize_t n;
        const char *file = PyUnicode_AsUTF8AndSize(c->co_filename, &n);
        if (file == NULL) {
            Py_DECREF(c);
            Py_DECREF(f);
            return -1;
        }
        if (n < plen || memcmp(file, pkg, (size_t)plen) != 0) {
            *code = c;
            *lasti = PyFrame_GetLasti(f);
            Py_DECREF(f);
            return 0;
        }
        Py_DECREF(c);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    if (start == NULL) return 1;
    *code = PyFrame_GetCode(start);
    *lasti = PyFrame_GetLasti(start);
    return 2;
}

static PyObject *Sites_here(Sites *self, PyObject *const *args, Py_ssize_t nargs) {
    if (arg_count("here", nargs, 2, 2) < 0) return NULL;
    if (!PyFrame_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "here() needs a frame");
        return NULL;
    }
    PyCodeObject *code;
    int lasti;
    PyFrameObject *f = (PyFrameObject *)args[0];
    PyObject *last = self->last;
    if (last != NULL && PyTuple_GET_ITEM(last, 2) == args[1]) {
        /* the same user's line and goroutine (its G's id object) as last time: no file to check */
        PyCodeObject *c = PyFrame_GetCode(f);
        Py_DECREF(c); /* the frame holds it */
        if (PyTuple_GET_ITEM(last, 0) == (PyObject *)c && self->last_lasti == PyFrame_GetLasti(f))
            return Py_NewRef(last);
    }
    if (!PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "here() needs an int creator id");
        return NULL;
    }
    int r = user_frame(self, f, &code, &lasti);
    if (r == 1 || r < 0) return r < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *at = PyLong_FromLong(lasti);
    PyObject *made = at == NULL ? NULL : PyTuple_New(3);
    if (made == NULL) {
        Py_DECREF(code);
        Py_XDECREF(at);
        return NULL;
    }
    PyTuple_SET_ITEM(made, 0, (PyObject *)code);
    PyTuple_SET_ITEM(made, 1, at);
    PyTuple_SET_ITEM(made, 2, Py_NewRef(args[1]));
    if (r == 0) { /* not f for want of a user's frame (2): its callers may differ next time */
        Py_XSETREF(self->last, Py_NewRef(made));
        self->last_lasti = lasti;
    }
    return made;
}

/* The site of the user's call (resolve's bytes, kept per (code, lasti)), or None: a new
 * reference; NULL on error. `direct`: the innermost Python frame is the caller of go() (the
 * compiled go, GoEntry), else it is the Python go() itself, whose caller the search starts at. */
static PyObject *sites_caller(Sites *self, int direct) {
    PyCodeObject *code;
    int lasti;
    PyFrameObject *top = PyEval_GetFrame(); /* borrowed */
    PyFrameObject *f = top == NULL ? NULL : direct ? (PyFrameObject *)Py_NewRef(top)
                                                   : PyFrame_GetBack(top);
    int r = user_frame(self, f, &code, &lasti);
    Py_XDECREF(f);
    if (r == 1 || r < 0) return r < 0 ? NULL : Py_NewRef(Py_None);
    site_slot *sl = &self->slots[(((uintptr_t)code >> 4) ^ ((uintptr_t)lasti * 0x9E37u)) %
                                 SITE_SLOTS];
    if (sl->code == (PyObject *)code && sl->lasti == lasti) {
        Py_DECREF(code);
        return Py_NewRef(sl->site);
    }
    if (self->resolve == NULL) {
        Py_DECREF(code);
        return Py_NewRef(Py_None); /* cleared by the GC: no site */
    }
    PyObject *site = PyObject_CallFunction(self->resolve, "Oi", (PyObject *)code, lasti);
    if (site == NULL || !PyBytes_CheckExact(site)) {
        if (site != NULL) PyErr_SetString(PyExc_TypeError, "Sites: resolve() must return bytes");
        Py_DECREF(code);
        Py_XDECREF(site);
        return NULL;
    }
    Py_XSETREF(sl->code, (PyObject *)code); /* the reference user_frame gave */
    sl->lasti = lasti;
    Py_XSETREF(sl->site, Py_NewRef(site));
    return site;
}

static PyObject *Sites_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *pkg, *resolve;
    static char *kwlist[] = {"pkg", "resolve", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO:Sites", kwlist, &pkg, &resolve)) return NULL;
    if (!PyCallable_Check(resolve)) {
        PyErr_SetString(PyExc_TypeError, "Sites: resolve must be callable");
        return NULL;
    }
    Sites *self = (Sites *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->pkg = Py_NewRef(pkg);
    self->resolve = Py_NewRef(resolve);
    return (PyObject *)self;
}

static int Sites_traverse(Sites *self, visitproc visit, void *arg) {
    Py_VISIT(self->resolve);
    Py_VISIT(self->last);
    for (int i = 0; i < SITE_SLOTS; i++) {
        Py_VISIT(self->slots[i].code);
        Py_VISIT(self->slots[i].site);
    }
    return 0;
}

static int Sites_clear(Sites *self) {
    Py_CLEAR(self->resolve);
    Py_CLEAR(self->last);
    for (int i = 0; i < SITE_SLOTS; i++) {
        Py_CLEAR(self->slots[i].code);
        Py_CLEAR(self->slots[i].site);
    }
    return 0;
}

static void Sites_dealloc(Sites *self) {
    PyObject_GC_UnTrack(self);
    Sites_clear(self);
    Py_XDECREF(self->pkg);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Sites_methods[] = {
    {"here", (PyCFunction)(void (*)(void))Sites_here, METH_FASTCALL,
     "here(f, creator) -> (code, lasti, creator) | None: G.made of a goroutine made by a call "
     "under frame f (the innermost frame from f out that is not csp_mp's)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Sites_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Sites",
    .tp_basicsize = sizeof(Sites),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Sites(pkg, resolve): where the code calling go() is, outside the directory pkg; "
              "resolve(code, lasti) -> bytes gives a site as a task frame carries it.",
    .tp_new = Sites_new,
    .tp_dealloc = (destructor)Sites_dealloc,
    .tp_traverse = (traverseproc)Sites_traverse,
    .tp_clear = (inquiry)Sites_clear,
    .tp_methods = Sites_methods,
};

/* ---------------------------------------------------------------- go() of a P, in one call
 *
 * Spawner(encoder, hub, owner, frames, entries, place, flush, batch, sites=None,
 * creator=None, hint=-1, ring=-1, published=None, wake=None, bells=None) is the compiled form
 * of csp_mp/_mp/runq.py's place() for its common call: go(fn, *args) of the callable last
 * given (fn_last, whose pickle_fn entry it holds), no kwargs, plain args. go(fn, args, kwargs)
 * then takes the next seq and frames the call (encode(), with made: the caller's site from
 * sites and creator(hub), the running goroutine's record or id); its entry is (seq, fn, args,
 * kwargs, made), kwargs an empty dict (GoEntry's one for all its calls).
 * When no frame waits in frames and either the ring at byte offset ring (this P's run queue)
 * is empty and armed is set (the broker's poll sets it, such a frame spends it) or the word at
 * byte offset hint (G_HUNGRY, csp_mp/_mp/ctx.py; a ring needs it) is set, it puts the
 * frame in the ring at once, appends the entry to published (the broker's pending deque) and,
 * a P being hungry, takes the hint (the idle P's number + 1) and rings that P's doorbell
 * (bells: each P's bell offset), or without bells calls wake(). Otherwise it appends the frame
 * to frames and the entry to entries (the broker's unflushed and unq deques: frames, entries
 * and published are collections.deque objects, checked at construction) and calls flush()
 * every batch frames, and after every frame while the hint is set. Any other call goes to
 * place(fn, args, kwargs), the Python function, which reads and updates seq, fn_last and
 * entry here. A hub that stops hands go() to its own spawn from then on
 * (Hub._stop_placing), which starts nothing: the Spawner is not called.
 */
typedef struct {
    PyObject_HEAD
    TaskEncoder *encoder;
    PyObject *hub, *owner, *frames_append, *entries_append, *entries_pop, *frames, *place;
    PyObject *flush;
    PyObject *fn_last, *entry;
    Sites *sites; /* NULL: frames carry no site */
    PyObject *creator;   /* creator(hub) -> the goroutine running (record or id); NULL: 0 */
    PyObject *last_made; /* spawner_made's last answer */
    long long seq, batch;
    long long hint; /* byte offset of the control block's G_HUNGRY word in the encoder's
                     * region, or -1: while it reads non-zero every go() flushes */
    long long ring; /* byte offset of this P's run-queue ring, or -1 (no direct publishing) */
    PyObject *published, *published_append, *published_pop; /* the broker's pending deque */
    PyObject *wake;                          /* the broker's wake_hungry */
    long long *bells;  /* each P's doorbell offset (PyMem), or NULL: wake() rings instead */
    Py_ssize_t nbells;
    int armed; /* an empty ring takes the next frame at once: set by the broker's poll, spent
                * by that frame (a burst of go() calls then fills the ring in batches) */
} Spawner;

/* A queued frame given up: its names' counts back (an exception is set and stays). */
static void uncount(Spawner *self, const names_t *nm) {
    Region *reg = (Region *)self->encoder->region;
    if (reg == NULL || nm->n == 0) return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (count_names(reg, nm, -1) < 0) PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(et, ev, tb);
}

/* The entry go() just appended to `pop`'s deque taken back out (an exception is set and stays
 * the one raised). */
static void entry_back(Spawner *self, PyObject *pop) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallNoArgs(pop);
    if (r == NULL) PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(r);
    PyErr_Restore(et, ev, tb);
}

/* The frame straight into this P's ring when nothing of this P waits unpublished and either
 * the ring is empty (no idle P can see any work of this P) or a P is hungry: runq.py's
 * place() does the same. 1 published, 2 published and a P is hungry (call wake), 0 not
 * published (the caller queues it), -1 error. *handed is set once the frame is in the ring:
 * from then on it and its names' counts belong to the ring (an error after that gives nothing
 * back). */
static int publish(Spawner *self, PyObject *frame, PyObject *ent, int *handed) {
    *handed = 0;
    if (self->ring < 0 || !PyBytes_CheckExact(frame)) return 0;
    Py_ssize_t queued = PyObject_Length(self->frames); /* a deque's: runs no Python code */
    if (queued != 0) return queued < 0 ? -1 : 0; /* behind those: seq order in the ring */
    Region *reg = (Region *)self->encoder->region;
    ring_t g;
    if (ring_open(reg, self->ring, &g) < 0 || region_span(reg, self->hint, 8, 8) < 0) return -1;
    int hungry = atomic_load_explicit(word_at(reg, self->hint), memory_order_relaxed) != 0;
    /* relaxed loads: a hint only (a thief that empties the ring meanwhile finds the frame) */
    if (!hungry && (!self->armed || atomic_load_explicit(g.tail, memory_order_relaxed) !=
                                    atomic_load_explicit(g.head, memory_order_relaxed)))
        return 0;
    /* the entry first: a frame is never in the ring without one (pop_own pairs them). The
     * append can run Python code (a bounded deque drops an item, whose finalizer runs), which
     * may release the region: the ring is opened again after it, nothing looked at before it
     * is used. */
    PyObject *r = PyObject_CallOneArg(self->published_append, ent);
    if (r == NULL) return -1;
    Py_DECREF(r);
    int put = ring_open(reg, self->ring, &g) < 0 ? -1
              : ring_put_bytes(reg, &g, PyBytes_AS_STRING(frame),
                               (uint64_t)PyBytes_GET_SIZE(frame));
    if (put <= 0) { /* not put (full, too large, or an error): the entry back out, the caller
                     * queues it */
        entry_back(self, self->published_pop);
        return put;
    }
    *handed = 1;
    if (!hungry)
        self->armed = 0;
    /* The frame is in; a P that went idle meanwhile stored its hint before it looked at the
     * rings one last time (broker.idle). The exchange is a full barrier: either it sees that
     * hint, or that P's last look sees this frame (the store of the hint and the store of the
     * tail cannot both be missed). Checked again: ring_put_bytes may have waited for the
     * ring's lock with the GIL released. */
    if (region_span(reg, self->hint, 8, 8) < 0) return -1;
    uint64_t h = atomic_exchange_explicit(word_at(reg, self->hint), 0, memory_order_seq_cst);
    if (h == 0) return 1;
    if (self->bells == NULL) {
        atomic_store_explicit(word_at(reg, self->hint), h, memory_order_relaxed);
        return 2; /* wake() takes it and rings */
    }
    /* the hint names the idle P (p + 1): ring that P's bell (wake_hungry). It is a word of
     * the arena: any other value is a corrupt control block, reported (the frame stays
     * published), never an index. */
    if (h > (uint64_t)self->nbells) {
        PyErr_Format(PyExc_ValueError,
                     "Spawner: the hint word reads %llu, not a P of %zd (a corrupt control "
                     "block); the goroutine is queued", (unsigned long long)h, self->nbells);
        return -1;
    }
    return bell_ring_at(reg, self->bells[h - 1]) < 0 ? -1 : 1;
}

/* G.made of the goroutine go() makes: (where the user called go(), the id of the goroutine that
 * did), a new reference. creator(hub) gives that goroutine's record (its id is read from the
 * record, grecord.c) or its id; None, or AttributeError raised, means none runs: 0. The last
 * answer is given again while both are the same (a loop). */
static PyObject *spawner_made(Spawner *self, int direct) {
    PyObject *gid = self->creator == NULL ? PyLong_FromLong(0)
                                          : PyObject_CallOneArg(self->creator, self->hub);
    if (gid == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        gid = PyLong_FromLong(0);
    }
    if (gid == NULL) return NULL;
    if (gid == Py_None) {
        Py_SETREF(gid, PyLong_FromLong(0));
        if (gid == NULL) return NULL;
    } else if (!PyLong_Check(gid)) {
        PyObject *id = grecord_id(gid);
        Py_DECREF(gid);
        if (id == NULL) {
            PyErr_SetString(PyExc_TypeError,
                            "Spawner: creator(hub) must give a goroutine record, an id or None");
            return NULL;
        }
        gid = id;
    }
    PyObject *site = self->sites != NULL ? sites_caller(self->sites, direct)
                                         : Py_NewRef(Py_None);
    if (site == NULL) {
        Py_DECREF(gid);
        return NULL;
    }
    /* read after sites_caller, whose resolve() may run go() again and replace it; nothing
     * runs Python code from here to its use */
    PyObject *last = self->last_made;
    if (last != NULL && PyTuple_GET_ITEM(last, 0) == site && PyTuple_GET_ITEM(last, 1) == gid) {
        Py_DECREF(site);
        Py_DECREF(gid);
        return Py_NewRef(last);
    }
    PyObject *made = PyTuple_Pack(2, site, gid);
    Py_DECREF(site);
    Py_DECREF(gid);
    if (made != NULL) Py_XSETREF(self->last_made, Py_NewRef(made));
    return made;
}

/* go(fn, *targs) with no kwargs, fn being the callable last given: framed and queued here.
 * *fast is set to 0, with NULL returned and nothing done, when the call is not for this path
 * (another callable, or arguments the codec must carry): the caller takes place()'s. `direct`
 * as for sites_caller. */
static PyObject *spawner_go(Spawner *self, PyObject *fn, PyObject *targs, PyObject *kwargs,
                            int direct, int *fast) {
    *fast = 1;
    if (self->place == NULL) {
        PyErr_SetString(PyExc_ValueError, "Spawner: cleared by the garbage collector");
        return NULL;
    }
    if (fn != self->fn_last) {
        *fast = 0;
        return NULL;
    }
    long long creator;
    PyObject *made = spawner_made(self, direct);
    if (made == NULL || arg_ll(PyTuple_GET_ITEM(made, 1), &creator) < 0) {
        Py_XDECREF(made);
        return NULL;
    }
    PyObject *seq = PyLong_FromLongLong(self->seq + 1);
    if (seq == NULL) {
        Py_DECREF(made);
        return NULL;
    }
    names_t nm;
    PyObject *frame = encode_frame(self->encoder, seq, self->owner, self->entry, targs,
                                   PyTuple_GET_ITEM(made, 0), creator, &nm);
    if (frame == Py_None) { /* an argument for the codec: the Python path */
        Py_DECREF(frame);
        Py_DECREF(seq);
        Py_DECREF(made);
        *fast = 0;
        return NULL;
    }
    PyObject *ent = frame == NULL ? NULL : PyTuple_Pack(5, seq, fn, targs, kwargs, made);
    Py_DECREF(seq);
    Py_DECREF(made);
    if (ent == NULL) {
        if (frame != NULL) uncount(self, &nm);
        Py_XDECREF(frame);
        return NULL;
    }
    /* Not the cyclic collector's: only the broker's deques hold an entry, and nothing it
     * reaches can reach it back (it is in no cycle), so the collector need not walk the
     * entries of a fan-out waiting in the queue at every collection (a quarter of a 100 k
     * fan-out's go() loop went to collections that walked them). What it holds stays
     * reachable: an untracked container's references count as references from outside. */
    PyObject_GC_UnTrack(ent);
    self->seq++;
    int handed;
    int put = publish(self, frame, ent, &handed);
    if (put != 0) {
        if (put < 0 && !handed) uncount(self, &nm); /* else the ring's frame holds them */
        Py_DECREF(frame);
        Py_DECREF(ent);
        if (put < 0) return NULL;
        if (put == 2) return PyObject_CallNoArgs(self->wake);
        Py_RETURN_NONE;
    }
    /* the entry first: a frame is never queued without one (pop_own pairs them) */
    PyObject *r = PyObject_CallOneArg(self->entries_append, ent);
    Py_DECREF(ent);
    if (r == NULL) {
        uncount(self, &nm);
        Py_DECREF(frame);
        return NULL;
    }
    Py_DECREF(r);
    r = PyObject_CallOneArg(self->frames_append, frame);
    Py_DECREF(frame);
    if (r == NULL) { /* the entry back out: an entry is never queued without its frame */
        entry_back(self, self->entries_pop);
        uncount(self, &nm);
        return NULL;
    }
    Py_DECREF(r);
    Py_ssize_t n = PyObject_Length(self->frames);
    if (n < 0) return NULL;
    if (self->batch > 0 && n % self->batch == 0) return PyObject_CallNoArgs(self->flush);
    if (self->hint >= 0) { /* a P went idle: publish now (Go's wakep), not at the batch's end */
        Region *reg = (Region *)self->encoder->region;
        if (region_span(reg, self->hint, 8, 8) < 0) return NULL;
        if (atomic_load_explicit(word_at(reg, self->hint), memory_order_relaxed))
            return PyObject_CallNoArgs(self->flush);
    }
    Py_RETURN_NONE;
}

static PyObject *Spawner_go(Spawner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (self->place == NULL) {
        PyErr_SetString(PyExc_ValueError, "Spawner: cleared by the garbage collector");
        return NULL;
    }
    if (arg_count("go", nargs, 3, 3) < 0) return NULL;
    PyObject *fn = args[0], *targs = args[1], *kwargs = args[2];
    if (PyTuple_CheckExact(targs) && PyDict_CheckExact(kwargs) && PyDict_GET_SIZE(kwargs) == 0) {
        int fast;
        PyObject *r = spawner_go(self, fn, targs, kwargs, 0, &fast);
        if (fast) return r;
    }
    if (self->place == NULL) { /* cleared meanwhile (resolve() ran Python code) */
        PyErr_SetString(PyExc_ValueError, "Spawner: cleared by the garbage collector");
        return NULL;
    }
    return PyObject_Vectorcall(self->place, args, 3, NULL);
}

/* collections.deque itself (the interpreter's static type: Python code cannot make another
 * of that name), not a subclass: its append and pop are the builtin ones, its length runs no
 * Python code. The C API does not export the type, so it is known by its name. */
static int is_deque(PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    return !(t->tp_flags & Py_TPFLAGS_HEAPTYPE) && strcmp(t->tp_name, "collections.deque") == 0;
}

static PyObject *Spawner_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *encoder, *hub, *owner, *frames, *entries, *place, *flush, *sites = Py_None;
    PyObject *creator = Py_None, *published = Py_None, *wake = Py_None, *bells = Py_None;
    long long batch, hint = -1, ring = -1;
    static char *kwlist[] = {"encoder", "hub", "owner", "frames", "entries", "place", "flush",
                             "batch", "sites", "creator", "hint", "ring", "published", "wake",
                             "bells", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO!OOOOL|OOLLOOO:Spawner", kwlist,
                                     &TaskEncoder_Type, &encoder, &hub, &PyLong_Type, &owner,
                                     &frames, &entries, &place, &flush, &batch, &sites, &creator,
                                     &hint, &ring, &published, &wake, &bells))
        return NULL;
    if (sites != Py_None && !PyObject_TypeCheck(sites, &Sites_Type)) {
        PyErr_SetString(PyExc_TypeError, "Spawner: sites must be a Sites or None");
        return NULL;
    }
    if (creator != Py_None && !PyCallable_Check(creator)) {
        PyErr_SetString(PyExc_TypeError, "Spawner: creator must be callable or None");
        return NULL;
    }
    if (!is_deque(frames) || !is_deque(entries) || (ring >= 0 && !is_deque(published))) {
        PyErr_SetString(PyExc_TypeError, "Spawner: frames, entries and (with a ring) published "
                                         "must be collections.deque objects (not subclasses)");
        return NULL;
    }
    if (ring >= 0 && hint < 0) { /* publish() takes the hint word after every frame it puts */
        PyErr_SetString(PyExc_ValueError, "Spawner: a ring needs a hint word (hint >= 0)");
        return NULL;
    }
    if (ring >= 0) {
        Region *reg = (Region *)((TaskEncoder *)encoder)->region;
        ring_t g;
        if (reg == NULL) {
            PyErr_SetString(PyExc_ValueError, "Spawner: a ring needs an encoder with a region");
            return NULL;
        }
        if (ring_open(reg, ring, &g) < 0) return NULL;
        if (!PyCallable_Check(wake)) {
            PyErr_SetString(PyExc_TypeError, "Spawner: wake must be callable with a ring");
            return NULL;
        }
    }
    if (hint >= 0) {
        Region *reg = (Region *)((TaskEncoder *)encoder)->region;
        if (reg == NULL) {
            PyErr_SetString(PyExc_ValueError,
                            "Spawner: a hint word needs an encoder with a region");
            return NULL;
        }
        if (region_span(reg, hint, 8, 8) < 0) return NULL;
    }
    if (!PyCallable_Check(place) || !PyCallable_Check(flush)) {
        PyErr_SetString(PyExc_TypeError, "Spawner: place and flush must be callable");
        return NULL;
    }
    long long *boffs = NULL;
    Py_ssize_t nb = 0;
    if (bells != Py_None) {
        if (!PyTuple_CheckExact(bells) || hint < 0) {
            PyErr_SetString(PyExc_TypeError, "Spawner: bells must be a tuple of offsets, "
                                             "with a hint word");
            return NULL;
        }
        nb = PyTuple_GET_SIZE(bells);
        boffs = PyMem_Malloc(sizeof(long long) * (size_t)(nb ? nb : 1));
        if (boffs == NULL) return PyErr_NoMemory();
        Region *reg = (Region *)((TaskEncoder *)encoder)->region;
        for (Py_ssize_t i = 0; i < nb; i++) {
            if (arg_ll(PyTuple_GET_ITEM(bells, i), &boffs[i]) < 0 || reg == NULL ||
                region_span(reg, boffs[i], 8, 8) < 0) {
                if (reg == NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "Spawner: bells need a region");
                PyMem_Free(boffs);
                return NULL;
            }
        }
    }
    /* the deques' own methods, bound once (is_deque: the builtin ones) */
    PyObject *fa = PyObject_GetAttrString(frames, "append");
    PyObject *ea = fa == NULL ? NULL : PyObject_GetAttrString(entries, "append");
    PyObject *ep = ea == NULL ? NULL : PyObject_GetAttrString(entries, "pop");
    PyObject *pa = ep == NULL || ring < 0 ? NULL : PyObject_GetAttrString(published, "append");
    PyObject *pp = pa == NULL ? NULL : PyObject_GetAttrString(published, "pop");
    Spawner *self = ep == NULL || (ring >= 0 && pp == NULL) ? NULL
                  : (Spawner *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_XDECREF(fa);
        Py_XDECREF(ea);
        Py_XDECREF(ep);
        Py_XDECREF(pa);
        Py_XDECREF(pp);
        PyMem_Free(boffs);
        return NULL;
    }
    self->bells = boffs;
    self->nbells = nb;
    self->published_append = pa;
    self->published_pop = pp;
    self->entries_pop = ep;
    self->published = ring >= 0 ? Py_NewRef(published) : NULL;
    self->wake = ring >= 0 ? Py_NewRef(wake) : NULL;
    self->ring = ring < 0 ? -1 : ring;
    self->encoder = (TaskEncoder *)Py_NewRef(encoder);
    self->hub = Py_NewRef(hub);
    self->owner = Py_NewRef(owner);
    self->frames = Py_NewRef(frames);
    self->frames_append = fa;
    self->entries_append = ea;
    self->place = Py_NewRef(place);
    self->flush = Py_NewRef(flush);
    self->fn_last = Py_NewRef(Py_None);
    self->entry = Py_NewRef(Py_None);
    self->sites = sites == Py_None ? NULL : (Sites *)Py_NewRef(sites);
    self->creator = creator == Py_None ? NULL : Py_NewRef(creator);
    self->batch = batch;
    self->hint = hint < 0 ? -1 : hint;
    self->armed = 1;
    self->seq = 0;
    return (PyObject *)self;
}

static int Spawner_traverse(Spawner *self, visitproc visit, void *arg) {
    Py_VISIT(self->encoder);
    Py_VISIT(self->hub);
    Py_VISIT(self->frames);
    Py_VISIT(self->frames_append);
    Py_VISIT(self->entries_append);
    Py_VISIT(self->entries_pop);
    Py_VISIT(self->place);
    Py_VISIT(self->flush);
    Py_VISIT(self->fn_last);
    Py_VISIT(self->entry);
    Py_VISIT(self->published);
    Py_VISIT(self->published_append);
    Py_VISIT(self->published_pop);
    Py_VISIT(self->wake);
    Py_VISIT(self->sites);
    Py_VISIT(self->creator);
    Py_VISIT(self->last_made);
    return 0;
}

/* place first: a finalizer run by the clearing sees a cleared Spawner (go() checks it) */
static int Spawner_clear(Spawner *self) {
    Py_CLEAR(self->place);
    Py_CLEAR(self->encoder);
    Py_CLEAR(self->hub);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->frames);
    Py_CLEAR(self->frames_append);
    Py_CLEAR(self->entries_append);
    Py_CLEAR(self->entries_pop);
    Py_CLEAR(self->flush);
    Py_CLEAR(self->fn_last);
    Py_CLEAR(self->entry);
    Py_CLEAR(self->sites);
    Py_CLEAR(self->creator);
    Py_CLEAR(self->last_made);
    Py_CLEAR(self->published);
    Py_CLEAR(self->published_append);
    Py_CLEAR(self->published_pop);
    Py_CLEAR(self->wake);
    self->ring = -1; /* cleared: nothing is published directly */
    return 0;
}

static void Spawner_dealloc(Spawner *self) {
    PyObject_GC_UnTrack(self);
    Spawner_clear(self);
    PyMem_Free(self->bells);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Spawner_get_armed(Spawner *self, void *unused) {
    (void)unused;
    return PyBool_FromLong(self->armed);
}

static int Spawner_set_armed(Spawner *self, PyObject *v, void *unused) {
    (void)unused;
    int t = v == NULL ? -1 : PyObject_IsTrue(v);
    if (t < 0) {
        if (v == NULL) PyErr_SetString(PyExc_AttributeError, "armed cannot be deleted");
        return -1;
    }
    self->armed = t;
    return 0;
}

static PyObject *Spawner_get_seq(Spawner *self, void *unused) {
    (void)unused;
    return PyLong_FromLongLong(self->seq);
}

static int Spawner_set_seq(Spawner *self, PyObject *v, void *unused) {
    (void)unused;
    long long s;
    if (v == NULL || arg_ll(v, &s) < 0) {
        if (v == NULL) PyErr_SetString(PyExc_AttributeError, "seq cannot be deleted");
        return -1;
    }
    self->seq = s;
    return 0;
}

static PyObject *Spawner_get_fn_last(Spawner *self, void *unused) {
    (void)unused;
    return Py_NewRef(self->fn_last != NULL ? self->fn_last : Py_None);
}

static int Spawner_set_fn_last(Spawner *self, PyObject *v, void *unused) {
    (void)unused;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "fn_last cannot be deleted");
        return -1;
    }
    Py_XSETREF(self->fn_last, Py_NewRef(v));
    return 0;
}

static PyObject *Spawner_get_entry(Spawner *self, void *unused) {
    (void)unused;
    return Py_NewRef(self->entry != NULL ? self->entry : Py_None);
}

static int Spawner_set_entry(Spawner *self, PyObject *v, void *unused) {
    (void)unused;
    if (v == NULL || !PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != 3) {
        PyErr_SetString(PyExc_TypeError, "entry must be pickle_fn's (digest, fn_bytes, warn)");
        return -1;
    }
    Py_XSETREF(self->entry, Py_NewRef(v));
    return 0;
}

static PyGetSetDef Spawner_getset[] = {
    {"seq", (getter)Spawner_get_seq, (setter)Spawner_set_seq, "the last seq given", NULL},
    {"armed", (getter)Spawner_get_armed, (setter)Spawner_set_armed,
     "whether an empty ring takes the next frame at once (the broker's poll sets it)", NULL},
    {"fn_last", (getter)Spawner_get_fn_last, (setter)Spawner_set_fn_last,
     "the callable go() was last given", NULL},
    {"entry", (getter)Spawner_get_entry, (setter)Spawner_set_entry, "fn_last's pickle_fn entry",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Spawner_methods[] = {
    {"go", (PyCFunction)(void (*)(void))Spawner_go, METH_FASTCALL,
     "go(fn, args, kwargs) -> None: queue go(fn, *args, **kwargs) as runq.place() does."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Spawner_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Spawner",
    .tp_basicsize = sizeof(Spawner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Spawner(encoder, hub, owner, frames, entries, place, flush, batch, sites=None, "
              "creator=None, hint=-1, ring=-1, published=None, wake=None, bells=None): a P's "
              "go() for the callable last given, no kwargs and plain args; place() takes the "
              "rest. Frames carry the caller's site (sites) and creator(hub).",
    .tp_new = Spawner_new,
    .tp_dealloc = (destructor)Spawner_dealloc,
    .tp_traverse = (traverseproc)Spawner_traverse,
    .tp_clear = (inquiry)Spawner_clear,
    .tp_methods = Spawner_methods,
    .tp_getset = Spawner_getset,
};

/* GoEntry(slow): csp_mp.go itself on the compiled core. go(fn, *args) with no kwargs, while a
 * Spawner is its target and fn is the callable that Spawner was last given, is framed by that
 * Spawner from here (spawner_go, the user's frame the innermost one: no Python frame of go()
 * is made); every other call is slow(fn, *args, **kwargs), the Python go() (csp_mp/_run.py,
 * the specification), unchanged. The runtime sets `target` to the Spawner that this process's
 * hub hands go() to, and to None whenever that changes (an instrument installed, the hub
 * stopping, a fork): anything but a Spawner is stored as None. Instances have a __dict__ (the
 * function's __module__, __name__, __qualname__, __doc__ and __wrapped__, set from Python) and
 * pickle by their __qualname__, as the function does.
 *
 * Invariants:
 *   - made whole by tp_new (slow callable); a GoEntry the GC cleared raises ValueError;
 *   - the fast path runs only with a target, no keyword, at least fn, fn the target's fn_last:
 *     it then behaves as slow() would (slow reaches the same Spawner through hub.go).
 *   - every entry the fast path makes holds the one empty dict `nokw` as its kwargs (nothing
 *     adds to a goroutine's kwargs); one found not empty is replaced before use.
 */
typedef struct {
    PyObject_HEAD
    PyObject *slow;
    Spawner *target; /* NULL: every call is slow's */
    PyObject *dict;
    PyObject *nokw; /* the entries' kwargs: {} */
    vectorcallfunc vectorcall;
} GoEntry;

static PyObject *GoEntry_vectorcall(GoEntry *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (self->slow == NULL) {
        PyErr_SetString(PyExc_ValueError, "go: cleared by the garbage collector");
        return NULL;
    }
    Spawner *sp = self->target;
    if (sp != NULL && nargs >= 1 && kwnames == NULL && args[0] == sp->fn_last &&
        sp->place != NULL) {
        if (self->nokw == NULL || PyDict_GET_SIZE(self->nokw) != 0) {
            PyObject *d = PyDict_New();
            if (d == NULL) return NULL;
            Py_XSETREF(self->nokw, d);
        }
        PyObject *targs = PyTuple_New(nargs - 1);
        if (targs == NULL) return NULL;
        PyObject *kwargs = Py_NewRef(self->nokw);
        for (Py_ssize_t i = 1; i < nargs; i++) PyTuple_SET_ITEM(targs, i - 1, Py_NewRef(args[i]));
        /* made here and seen only by the entry and the goroutine's G (no user code holds it):
         * in no cycle, so not the collector's to walk, as the entry (spawner_go) */
        PyObject_GC_UnTrack(targs);
        Py_INCREF(sp); /* held across the call: resolve() or a finalizer may reset target */
        int fast;
        PyObject *r = spawner_go(sp, args[0], targs, kwargs, 1, &fast);
        Py_DECREF(sp);
        Py_DECREF(targs);
        Py_DECREF(kwargs);
        if (fast) return r;
        if (self->slow == NULL) {
            PyErr_SetString(PyExc_ValueError, "go: cleared by the garbage collector");
            return NULL;
        }
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static PyObject *GoEntry_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *slow;
    static char *kwlist[] = {"slow", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:GoEntry", kwlist, &slow)) return NULL;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "GoEntry: slow must be callable");
        return NULL;
    }
    GoEntry *self = (GoEntry *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->slow = Py_NewRef(slow);
    self->target = NULL;
    self->dict = NULL;
    self->nokw = PyDict_New();
    if (self->nokw == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)GoEntry_vectorcall;
    return (PyObject *)self;
}

static int GoEntry_traverse(GoEntry *self, visitproc visit, void *arg) {
    Py_VISIT(self->slow);
    Py_VISIT(self->target);
    Py_VISIT(self->dict);
    Py_VISIT(self->nokw);
    return 0;
}

static int GoEntry_clear(GoEntry *self) {
    Py_CLEAR(self->slow);
    Py_CLEAR(self->target);
    Py_CLEAR(self->dict);
    Py_CLEAR(self->nokw);
    return 0;
}

static void GoEntry_dealloc(GoEntry *self) {
    PyObject_GC_UnTrack(self);
    GoEntry_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *GoEntry_get_target(GoEntry *self, void *unused) {
    (void)unused;
    if (self->slow == NULL) {
        PyErr_SetString(PyExc_ValueError, "go: cleared by the garbage collector");
        return NULL;
    }
    return Py_NewRef(self->target != NULL ? (PyObject *)self->target : Py_None);
}

static int GoEntry_set_target(GoEntry *self, PyObject *v, void *unused) {
    (void)unused;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "target cannot be deleted");
        return -1;
    }
    if (self->slow == NULL) {
        PyErr_SetString(PyExc_ValueError, "go: cleared by the garbage collector");
        return -1;
    }
    Spawner *sp = Py_TYPE(v) == &Spawner_Type ? (Spawner *)Py_NewRef(v) : NULL;
    Py_XSETREF(self->target, sp);
    return 0;
}

/* pickled by reference, as the function it stands for: its __qualname__ in its __module__ */
static PyObject *GoEntry_reduce(GoEntry *self, PyObject *unused) {
    (void)unused;
    PyObject *name = self->dict == NULL ? NULL : PyDict_GetItemString(self->dict, "__qualname__");
    if (name == NULL || !PyUnicode_Check(name)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "go: no __qualname__ to pickle it by reference");
        return NULL;
    }
    return Py_NewRef(name);
}

static PyObject *GoEntry_repr(GoEntry *self) {
    PyObject *name = self->dict == NULL ? NULL : PyDict_GetItemString(self->dict, "__qualname__");
    if (name != NULL && PyUnicode_Check(name))
        return PyUnicode_FromFormat("<compiled function %U>", name);
    return PyUnicode_FromFormat("<GoEntry object at %p>", (void *)self);
}

static PyGetSetDef GoEntry_getset[] = {
    {"target", (getter)GoEntry_get_target, (setter)GoEntry_set_target,
     "the Spawner go() frames calls with, or None (every call is slow's)", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef GoEntry_methods[] = {
    {"__reduce__", (PyCFunction)GoEntry_reduce, METH_NOARGS, "by reference: __qualname__"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject GoEntry_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.GoEntry",
    .tp_basicsize = sizeof(GoEntry),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "GoEntry(slow): go(fn, *args, **kwargs) framed by its target Spawner when it can, "
              "else slow(fn, *args, **kwargs).",
    .tp_new = GoEntry_new,
    .tp_dealloc = (destructor)GoEntry_dealloc,
    .tp_traverse = (traverseproc)GoEntry_traverse,
    .tp_clear = (inquiry)GoEntry_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(GoEntry, vectorcall),
    .tp_dictoffset = offsetof(GoEntry, dict),
    .tp_repr = (reprfunc)GoEntry_repr,
    .tp_methods = GoEntry_methods,
    .tp_getset = GoEntry_getset,
};
