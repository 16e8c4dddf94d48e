/* A P's handles on shared channels, registered and released in one call each.
 *
 * csp_mp/_mp/promote.py has the protocol (and its Python path: HandleRef, _register and
 * new_handle; Broker.release_handles is the release): a handle is the one Chan of this P for a
 * channel block, known through a weak reference whose callback queues it on the dead list,
 * kept in `chans` (by block offset) and `names` (by the 8 bytes naming the block). Here the weak
 * reference is a HandleRef of this file (a weakref subtype with its fields in C):
 *
 *   register(ch, st): ref = HandleRef to ch, its callback dead.append, entered in chans and
 *                     names; off, st and drop (st.drop_name) as the Python HandleRef's;
 *   new(st) -> Chan:  a new untyped Chan whose state is st, registered;
 *   release() -> (ended, others): empties the dead list; for each HandleRef, forgets it (if
 *                     still the registered one) and takes its count off the block's reference
 *                     word (REFS_BYTE, an atomic add): the states whose count reached 0 come
 *                     back in `ended` for the caller to destroy, other refs (atomics,
 *                     semaphores) in `others`.
 */
#include "core.h"

#include <stddef.h>

#include <structmember.h>

#define REFS_BYTE 80 /* a channel block's reference word (shared.py's _W_REFS * 8) */

typedef struct {
    PyWeakReference wr;
    PyObject *off;  /* int: the block's offset (chans' key) */
    PyObject *key;  /* bytes: its name (names' key) */
    PyObject *st;   /* this P's state of the channel */
    PyObject *drop; /* st.drop_name */
    char counts;    /* st belongs to the Handles' broker: its release takes a count off */
} HandleRef;

static void HandleRef_dealloc(HandleRef *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->off);
    Py_CLEAR(self->key);
    Py_CLEAR(self->st);
    Py_CLEAR(self->drop);
    _PyWeakref_RefType.tp_dealloc((PyObject *)self);
}

static int HandleRef_traverse(HandleRef *self, visitproc visit, void *arg) {
    Py_VISIT(self->st);
    Py_VISIT(self->drop);
    return _PyWeakref_RefType.tp_traverse((PyObject *)self, visit, arg);
}

static int HandleRef_clear(HandleRef *self) {
    Py_CLEAR(self->st);
    Py_CLEAR(self->drop);
    return _PyWeakref_RefType.tp_clear((PyObject *)self);
}

static PyMemberDef HandleRef_members[] = {
    {"off", T_OBJECT, offsetof(HandleRef, off), READONLY, "The channel block's offset."},
    {"st", T_OBJECT, offsetof(HandleRef, st), READONLY, "This P's state of the channel."},
    {"drop", T_OBJECT, offsetof(HandleRef, drop), READONLY,
     "Consumes one name in flight, which this handle already holds for its P."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject HandleRef_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.HandleRef",
    .tp_basicsize = sizeof(HandleRef),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A weak reference to this P's handle on a shared channel (made by Handles).",
    .tp_base = &_PyWeakref_RefType,
    .tp_dealloc = (destructor)HandleRef_dealloc,
    .tp_traverse = (traverseproc)HandleRef_traverse,
    .tp_clear = (inquiry)HandleRef_clear,
    .tp_members = HandleRef_members,
};

typedef struct {
    PyObject_HEAD
    Region *region;
    PyObject *chan_type, *chans, *names, *dead, *dead_append, *broker;
} Handles;

static PyObject *s_off, *s_drop_name, *s_key, *s_broker, *s_st_slot, *s_type, *s_check,
    *s_empty;

static int intern_names(void) {
    if (s_empty != NULL) return 0;
#define IN(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return -1
    IN(s_off, "off");
    IN(s_drop_name, "drop_name");
    IN(s_key, "key");
    IN(s_broker, "broker");
    IN(s_st_slot, "_st");
    IN(s_type, "_type");
    IN(s_check, "_check");
#undef IN
    return (s_empty = PyTuple_New(0)) == NULL ? -1 : 0;
}

static int Handles_init(Handles *self, PyObject *args, PyObject *kw) {
    PyObject *region, *chan_type, *chans, *names, *dead, *broker;
    static char *kwlist[] = {"region", "chan_type", "chans", "names", "dead", "broker", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!O!O", kwlist, &Region_Type, &region,
                                     &PyType_Type, &chan_type, &PyDict_Type, &chans,
                                     &PyDict_Type, &names, &PyList_Type, &dead, &broker))
        return -1;
    if (intern_names() < 0) return -1;
    PyObject *append = PyObject_GetAttrString(dead, "append");
    if (append == NULL) return -1;
    Py_XSETREF(self->dead_append, append);
    Py_XSETREF(self->region, (Region *)Py_NewRef(region));
    Py_XSETREF(self->chan_type, Py_NewRef(chan_type));
    Py_XSETREF(self->chans, Py_NewRef(chans));
    Py_XSETREF(self->names, Py_NewRef(names));
    Py_XSETREF(self->dead, Py_NewRef(dead));
    Py_XSETREF(self->broker, Py_NewRef(broker));
    return 0;
}

static int Handles_traverse(Handles *self, visitproc visit, void *arg) {
    Py_VISIT(self->region);
    Py_VISIT(self->chan_type);
    Py_VISIT(self->chans);
    Py_VISIT(self->names);
    Py_VISIT(self->dead);
    Py_VISIT(self->dead_append);
    Py_VISIT(self->broker);
    return 0;
}

static int Handles_clear(Handles *self) {
    Py_CLEAR(self->region);
    Py_CLEAR(self->chan_type);
    Py_CLEAR(self->chans);
    Py_CLEAR(self->names);
    Py_CLEAR(self->dead);
    Py_CLEAR(self->dead_append);
    Py_CLEAR(self->broker);
    return 0;
}

static void Handles_dealloc(Handles *self) {
    PyObject_GC_UnTrack(self);
    Handles_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(Handles *self) {
    if (self->chans == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Handles: not initialised");
        return -1;
    }
    return 0;
}

/* ref = HandleRef(ch, dead.append) with its fields, entered in chans and names */
static int do_register(Handles *self, PyObject *ch, PyObject *st) {
    PyObject *args = PyTuple_Pack(2, ch, self->dead_append);
    if (args == NULL) return -1;
    HandleRef *ref = (HandleRef *)_PyWeakref_RefType.tp_new(&HandleRef_Type, args, NULL);
    Py_DECREF(args);
    if (ref == NULL) return -1;
    int rc = -1;
    PyObject *broker = NULL;
    if ((ref->off = PyObject_GetAttr(st, s_off)) == NULL ||
        (ref->key = PyObject_GetAttr(st, s_key)) == NULL ||
        (ref->drop = PyObject_GetAttr(st, s_drop_name)) == NULL ||
        (broker = PyObject_GetAttr(st, s_broker)) == NULL)
        goto done;
    if (!PyLong_CheckExact(ref->off) || !PyBytes_CheckExact(ref->key)) {
        PyErr_SetString(PyExc_TypeError, "Handles: a state's off must be an int, key bytes");
        goto done;
    }
    ref->st = Py_NewRef(st);
    ref->counts = broker == self->broker;
    if (PyDict_SetItem(self->chans, ref->off, (PyObject *)ref) < 0 ||
        PyDict_SetItem(self->names, ref->key, (PyObject *)ref) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(broker);
    Py_DECREF(ref);
    return rc;
}

static PyObject *Handles_register(Handles *self, PyObject *const *args, Py_ssize_t nargs) {
    if (ready(self) < 0 || arg_count("register", nargs, 2, 2) < 0 ||
        do_register(self, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Handles_new(Handles *self, PyObject *st) {
    if (ready(self) < 0) return NULL;
    PyTypeObject *tp = (PyTypeObject *)self->chan_type;
    PyObject *ch = tp->tp_new(tp, s_empty, NULL);
    if (ch == NULL) return NULL;
    if (PyObject_SetAttr(ch, s_st_slot, st) < 0 || PyObject_SetAttr(ch, s_type, Py_None) < 0 ||
        PyObject_SetAttr(ch, s_check, Py_None) < 0 || do_register(self, ch, st) < 0) {
        Py_DECREF(ch);
        return NULL;
    }
    return ch;
}

/* One dead HandleRef: forget it if it is still the registered one, take its count off the
 * block; st appended to `ended` when that was the last reference. 0, or -1 on error. */
static int release_one(Handles *self, HandleRef *ref, PyObject *ended) {
    PyObject *cur = PyDict_GetItemWithError(self->chans, ref->off); /* borrowed */
    if (cur == NULL && PyErr_Occurred()) return -1;
    if (cur == (PyObject *)ref) {
        if (PyDict_DelItem(self->chans, ref->off) < 0) return -1;
        if (PyDict_DelItem(self->names, ref->key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
            PyErr_Clear(); /* names was emptied for a new runtime */
        }
    }
    if (!ref->counts || ref->st == NULL) return 0;
    long long off = PyLong_AsLongLong(ref->off);
    if (off == -1 && PyErr_Occurred()) return -1;
    if (region_span(self->region, off + REFS_BYTE, 8, 8) < 0) return -1;
    uint64_t old = atomic_fetch_add_explicit(word_at(self->region, off + REFS_BYTE),
                                             (uint64_t)-1, memory_order_seq_cst);
    return old == 1 ? PyList_Append(ended, ref->st) : 0;
}

static PyObject *Handles_release(Handles *self, PyObject *unused) {
    (void)unused;
    if (ready(self) < 0) return NULL;
    PyObject *ended = PyList_New(0), *others = PyList_New(0);
    if (ended == NULL || others == NULL) goto fail;
    PyObject *dead = self->dead;
    while (PyList_GET_SIZE(dead) > 0) {
        Py_ssize_t n = PyList_GET_SIZE(dead);
        PyObject *ref = Py_NewRef(PyList_GET_ITEM(dead, n - 1));
        if (PyList_SetSlice(dead, n - 1, n, NULL) < 0) {
            Py_DECREF(ref);
            goto fail;
        }
        int r = Py_IS_TYPE(ref, &HandleRef_Type) ? release_one(self, (HandleRef *)ref, ended)
                                                  : PyList_Append(others, ref);
        Py_DECREF(ref);
        if (r < 0) goto fail;
    }
    return Py_BuildValue("(NN)", ended, others);
fail:
    Py_XDECREF(ended);
    Py_XDECREF(others);
    return NULL;
}

static PyMethodDef Handles_methods[] = {
    {"register", (PyCFunction)(void (*)(void))Handles_register, METH_FASTCALL,
     "register(ch, st): make ch this P's handle on the channel of state st."},
    {"new", (PyCFunction)Handles_new, METH_O,
     "new(st) -> Chan: a new untyped handle on the channel of state st, registered."},
    {"release", (PyCFunction)Handles_release, METH_NOARGS,
     "release() -> (ended, others): empty the dead list; the states whose block lost its last "
     "reference, and the dead refs that are not channel handles."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Handles_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Handles",
    .tp_basicsize = sizeof(Handles),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Handles(region, chan_type, chans, names, dead, broker): a P's handles on shared "
              "channels, registered and released in one call each.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Handles_init,
    .tp_traverse = (traverseproc)Handles_traverse,
    .tp_clear = (inquiry)Handles_clear,
    .tp_dealloc = (destructor)Handles_dealloc,
    .tp_methods = Handles_methods,
};
