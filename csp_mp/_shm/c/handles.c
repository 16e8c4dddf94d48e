/* A P's handles on shared channels, registered and released in one call each.
 *
 * csp_mp/_mp/promote.py has the protocol (and its Python path, _register and new_handle;
 * Broker.release_handles is the release): a handle is the one Chan of this P for a channel
 * block, known through a weak reference (promote.HandleRef, whose callback queues it on the
 * dead list) kept in `chans` (by block offset) and `names` (by the 8 bytes naming the block).
 * Handles does the same steps with the same objects, so both paths can serve one program:
 *
 *   register(ch, st): ref = HandleRef(ch, dead.append) with ref.off, ref.st and ref.drop set,
 *                     entered in chans and names;
 *   new(st) -> Chan:  a new untyped Chan whose state is st, registered;
 *   release() -> (ended, others): empties the dead list; for each HandleRef, forgets it (if
 *                     still the registered one) and takes its count off the block: the states
 *                     whose count reached 0 come back in `ended` for the caller to destroy,
 *                     other refs (atomics, semaphores) in `others`.
 */
#include "core.h"

typedef struct {
    PyObject_HEAD
    PyObject *chan_type, *ref_type, *chans, *names, *dead, *dead_append, *broker;
} Handles;

static PyObject *s_off, *s_st, *s_drop, *s_key, *s_drop_name, *s_broker, *s_st_slot, *s_type,
    *s_check, *s_empty;

static int intern_names(void) {
    if (s_off != NULL) return 0;
#define IN(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return -1
    IN(s_off, "off");
    IN(s_st, "st");
    IN(s_drop, "drop");
    IN(s_key, "key");
    IN(s_drop_name, "drop_name");
    IN(s_broker, "broker");
    IN(s_st_slot, "_st");
    IN(s_type, "_type");
    IN(s_check, "_check");
#undef IN
    if ((s_empty = PyTuple_New(0)) == NULL) return -1;
    return 0;
}

static int Handles_init(Handles *self, PyObject *args, PyObject *kw) {
    PyObject *chan_type, *ref_type, *chans, *names, *dead, *broker;
    static char *kwlist[] = {"chan_type", "ref_type", "chans", "names", "dead", "broker", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!O!O", kwlist, &PyType_Type, &chan_type,
                                     &PyType_Type, &ref_type, &PyDict_Type, &chans, &PyDict_Type,
                                     &names, &PyList_Type, &dead, &broker))
        return -1;
    if (intern_names() < 0) return -1;
    PyObject *append = PyObject_GetAttrString(dead, "append");
    if (append == NULL) return -1;
    Py_XSETREF(self->dead_append, append);
    Py_XSETREF(self->chan_type, Py_NewRef(chan_type));
    Py_XSETREF(self->ref_type, Py_NewRef(ref_type));
    Py_XSETREF(self->chans, Py_NewRef(chans));
    Py_XSETREF(self->names, Py_NewRef(names));
    Py_XSETREF(self->dead, Py_NewRef(dead));
    Py_XSETREF(self->broker, Py_NewRef(broker));
    return 0;
}

static int Handles_traverse(Handles *self, visitproc visit, void *arg) {
    Py_VISIT(self->chan_type);
    Py_VISIT(self->ref_type);
    Py_VISIT(self->chans);
    Py_VISIT(self->names);
    Py_VISIT(self->dead);
    Py_VISIT(self->dead_append);
    Py_VISIT(self->broker);
    return 0;
}

static int Handles_clear(Handles *self) {
    Py_CLEAR(self->chan_type);
    Py_CLEAR(self->ref_type);
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
    int rc = -1;
    PyObject *off = NULL, *drop = NULL, *key = NULL;
    PyObject *ref = PyObject_CallFunctionObjArgs(self->ref_type, ch, self->dead_append, NULL);
    if (ref == NULL) return -1;
    if ((off = PyObject_GetAttr(st, s_off)) == NULL ||
        (drop = PyObject_GetAttr(st, s_drop_name)) == NULL ||
        (key = PyObject_GetAttr(st, s_key)) == NULL)
        goto done;
    if (PyObject_SetAttr(ref, s_off, off) < 0 || PyObject_SetAttr(ref, s_st, st) < 0 ||
        PyObject_SetAttr(ref, s_drop, drop) < 0 || PyDict_SetItem(self->chans, off, ref) < 0 ||
        PyDict_SetItem(self->names, key, ref) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(off);
    Py_XDECREF(drop);
    Py_XDECREF(key);
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

/* One dead HandleRef: forget it if it is still the registered one; its count off the block.
 * 1: the block's last reference went (st appended to ended), 0 not, -1 error. */
static int release_one(Handles *self, PyObject *ref, PyObject *ended) {
    int rc = -1;
    PyObject *off = NULL, *st = NULL, *key = NULL, *broker = NULL, *old = NULL;
    if ((off = PyObject_GetAttr(ref, s_off)) == NULL || (st = PyObject_GetAttr(ref, s_st)) == NULL)
        goto done;
    PyObject *cur = PyDict_GetItemWithError(self->chans, off); /* borrowed */
    if (cur == NULL && PyErr_Occurred()) goto done;
    if (cur == ref) {
        if (PyDict_DelItem(self->chans, off) < 0 || (key = PyObject_GetAttr(st, s_key)) == NULL)
            goto done;
        if (PyDict_DelItem(self->names, key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) goto done;
            PyErr_Clear(); /* names was emptied for a new runtime */
        }
    }
    if ((broker = PyObject_GetAttr(st, s_broker)) == NULL) goto done;
    rc = 0;
    if (broker == self->broker) {
        if ((old = PyObject_CallMethodNoArgs(st, s_drop_name)) == NULL) {
            rc = -1;
            goto done;
        }
        int last = PyLong_Check(old) && PyLong_AsLongLong(old) == 1;
        if (last && PyList_Append(ended, st) < 0) rc = -1;
    }
done:
    Py_XDECREF(off);
    Py_XDECREF(st);
    Py_XDECREF(key);
    Py_XDECREF(broker);
    Py_XDECREF(old);
    return rc;
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
        int r = Py_TYPE(ref) == (PyTypeObject *)self->ref_type ? release_one(self, ref, ended)
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
    .tp_doc = "Handles(chan_type, ref_type, chans, names, dead, broker): a P's handles on "
              "shared channels, registered and released in one call each.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Handles_init,
    .tp_traverse = (traverseproc)Handles_traverse,
    .tp_clear = (inquiry)Handles_clear,
    .tp_dealloc = (destructor)Handles_dealloc,
    .tp_methods = Handles_methods,
};
