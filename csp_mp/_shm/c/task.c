/* Task frames for the common go() call, laid out in C: the msgpack array
 * [seq, owner, digest, fn_bytes, args, warn] that csp_mp/_mp/tasks.py's pack() makes with
 * msgspec, for args made only of ints, floats, str, bool, None, small bytes and untyped channels
 * (each a msgpack extension 1 holding its arena offset, 8 bytes little-endian). Any other
 * argument makes encode() return None, and the caller takes pack()'s general path; pack() is the
 * specification of the frame, and msgspec decodes both alike.
 *
 * A frame that names channels counts one in-flight reference on each (the channel block's
 * reference word, _W_REFS in csp_mp/_chan/shared.py), once the frame is complete: a frame
 * given up half-way (None) has counted nothing. See the protocol in csp_mp/_mp/promote.py.
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
#define REFS_BYTE 80   /* byte offset of a channel block's reference word (_W_REFS * 8) */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} buf_t;

static int grow(buf_t *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = b->cap * 2 > b->len + need ? b->cap * 2 : b->len + need + 64;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
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

static PyObject *s_type, *s_st, *s_shared, *s_off;

/* The arena offset of an untyped channel already shared (its state's ``off``); NULL with no
 * exception when the caller must ask chan_ext (typed, or still local). */
static PyObject *shared_offset(PyObject *ch) {
    if (s_type == NULL) {
        s_type = PyUnicode_InternFromString("_type");
        s_st = PyUnicode_InternFromString("_st");
        s_shared = PyUnicode_InternFromString("shared");
        s_off = PyUnicode_InternFromString("off");
        if (!s_type || !s_st || !s_shared || !s_off) return NULL;
    }
    PyObject *tp = PyObject_GetAttr(ch, s_type);
    if (tp == NULL) return NULL;
    Py_DECREF(tp);
    if (tp != Py_None) return NULL;
    PyObject *st = PyObject_GetAttr(ch, s_st);
    if (st == NULL) return NULL;
    PyObject *sh = PyObject_GetAttr(st, s_shared);
    PyObject *off = NULL;
    if (sh == Py_True) off = PyObject_GetAttr(st, s_off);
    Py_XDECREF(sh);
    Py_DECREF(st);
    if (off == NULL) PyErr_Clear();
    return off;
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
        PyObject *off = shared_offset(o);
        if (off == NULL && !PyErr_Occurred()) off = PyObject_CallOneArg(self->chan_ext, o);
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
        unsigned char e[10] = {0xd7, 0x01};
        for (int i = 0; i < 8; i++) e[2 + i] = (unsigned char)(v >> (8 * i)); /* little-endian */
        return put(b, e, 10);
    }
    return 1;
}

static PyObject *TaskEncoder_encode(TaskEncoder *self, PyObject *const *args, Py_ssize_t nargs) {
    /* encode(seq, owner, entry, args): entry is pickle_fn's (digest, fn_bytes, warn) */
    if (arg_count("encode", nargs, 4, 4) < 0) return NULL;
    PyObject *entry = args[2], *targs = args[3];
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 0)) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1)) ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 2))) {
        PyErr_SetString(PyExc_TypeError, "encode() needs entry = (digest, fn_bytes, warn)");
        return NULL;
    }
    if (!PyTuple_CheckExact(targs) && !PyList_CheckExact(targs)) Py_RETURN_NONE;
    PyObject *digest = PyTuple_GET_ITEM(entry, 0), *fnb = PyTuple_GET_ITEM(entry, 1);
    buf_t b = {NULL, 0, 0};
    if (grow(&b, 64 + PyBytes_GET_SIZE(digest) + PyBytes_GET_SIZE(fnb)) < 0) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(targs);
    PyObject **items = PySequence_Fast_ITEMS(targs);
    int r = put_array_header(&b, 6);
    if (!r) r = put_int(&b, args[0]);
    if (!r) r = put_int(&b, args[1]);
    if (!r) r = put_raw(&b, PyBytes_AS_STRING(digest), PyBytes_GET_SIZE(digest), 0);
    if (!r) r = put_raw(&b, PyBytes_AS_STRING(fnb), PyBytes_GET_SIZE(fnb), 0);
    if (!r) r = put_array_header(&b, n);
    long long offs[MAX_CHANS];
    int noffs = 0;
    for (Py_ssize_t i = 0; !r && i < n; i++) r = put_arg(self, &b, items[i], offs, &noffs);
    if (!r) r = put_str(&b, PyTuple_GET_ITEM(entry, 2));
    Region *reg = (Region *)self->region;
    for (int i = 0; r == 0 && reg != NULL && i < noffs; i++) /* checked before any count moves */
        if (region_span(reg, offs[i] + REFS_BYTE, 8, 8) < 0) r = -1;
    PyObject *res = NULL;
    if (r == 0) {
        res = PyBytes_FromStringAndSize(b.p, b.len);
        /* seq_cst, as Region.fetch_add: pairs with the receiving P's decrement (promote.py) */
        for (int i = 0; res != NULL && reg != NULL && i < noffs; i++)
            atomic_fetch_add_explicit(word_at(reg, offs[i] + REFS_BYTE), 1, memory_order_seq_cst);
    } else if (r == 1) {
        res = Py_NewRef(Py_None);
    }
    PyMem_Free(b.p);
    return res;
}

static int TaskEncoder_init(TaskEncoder *self, PyObject *args, PyObject *kw) {
    PyObject *chan_type, *chan_ext, *region = Py_None;
    Py_ssize_t oob_min;
    static char *kwlist[] = {"chan_type", "chan_ext", "oob_min", "region", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOn|O", kwlist, &chan_type, &chan_ext, &oob_min,
                                     &region))
        return -1;
    if (region != Py_None && !PyObject_TypeCheck(region, &Region_Type)) {
        PyErr_SetString(PyExc_TypeError, "TaskEncoder: region must be a Region or None");
        return -1;
    }
    Py_XSETREF(self->region, region == Py_None ? NULL : Py_NewRef(region));
    Py_XSETREF(self->chan_type, Py_NewRef(chan_type));
    Py_XSETREF(self->chan_ext, Py_NewRef(chan_ext));
    self->oob_min = oob_min;
    return 0;
}

static void TaskEncoder_dealloc(TaskEncoder *self) {
    Py_XDECREF(self->chan_type);
    Py_XDECREF(self->chan_ext);
    Py_XDECREF(self->region);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef TaskEncoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))TaskEncoder_encode, METH_FASTCALL,
     "encode(seq, owner, entry, args) -> bytes | None: the task frame, or None when an "
     "argument needs the codec."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject TaskEncoder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.TaskEncoder",
    .tp_basicsize = sizeof(TaskEncoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TaskEncoder(chan_type, chan_ext, oob_min, region=None): task frames of plain go() calls; "
               "with a region, each frame counts a reference on the channels it names.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TaskEncoder_init,
    .tp_dealloc = (destructor)TaskEncoder_dealloc,
    .tp_methods = TaskEncoder_methods,
};
