/* The goroutine record's fields, laid out in C: GRecord
 *
 * Twin (the Python path, the readable specification): csp_mp/_hub/g.py's PyG, whose slots and
 * __init__ these are. g.py's NativeG adds G's methods to this type. A record is made with
 * GRecord(id, fn, args, kwargs, p, local=True); every other field starts as g.py's AT_START
 * says, handed over once by GRecord.start_with(names, values), which checks the names against
 * the fields below (so g.py stays their one definition). GRecord.many(ids, allgs, p, items)
 * makes one record per (fn, args, made) of items, as Hub.new_gs does.
 *
 * Invariants:
 *   - every field holds a reference from tp_new on; deleting one (del g.x) leaves it NULL, and
 *     reading it then raises AttributeError, as an unset slot does.
 *   - a record takes part in the cyclic GC (its fields can reach it back: a channel's waiter).
 *   - no record exists before start_with: tp_new raises until it ran.
 */
#include "core.h"

#include <structmember.h>

/* id, fn, args, kwargs, p, local: given; the rest: AT_START's values */
#define G_GIVEN 6
#define G_NFIELDS 18

typedef struct {
    PyObject_HEAD
    PyObject *f[G_NFIELDS];
} GRecord;

#define G_MADE 16 /* the field Hub.new_gs sets: made */

#define FIELD(name, i) {name, T_OBJECT_EX, offsetof(GRecord, f) + (i) * sizeof(PyObject *), 0, NULL}
static PyMemberDef GRecord_members[G_NFIELDS + 1] = {
    FIELD("id", 0),      FIELD("fn", 1),      FIELD("args", 2),     FIELD("kwargs", 3),
    FIELD("p", 4),       FIELD("local", 5),   FIELD("glet", 6),     FIELD("state", 7),
    FIELD("reason", 8),  FIELD("param", 9),   FIELD("result", 10),  FIELD("is_main", 11),
    FIELD("name", 12),   FIELD("elem", 13),   FIELD("sel", 14),     FIELD("case", 15),
    FIELD("made", 16),   FIELD("wait_as", 17), {NULL}};
#undef FIELD

/* AT_START's values, in field order from G_GIVEN on (a tuple), or NULL before start_with */
static PyObject *at_start = NULL;

/* o's id field (a new reference) when o is a record (a GRecord or a subclass's), else NULL
 * with no exception set: the Spawner's creator may give the running goroutine's record. */
PyObject *grecord_id(PyObject *o) {
    if (!PyObject_TypeCheck(o, &GRecord_Type)) return NULL;
    PyObject *id = ((GRecord *)o)->f[0];
    return id == NULL ? NULL : Py_NewRef(id);
}

static GRecord *record_new(PyTypeObject *type, PyObject *const *given) {
    if (at_start == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "GRecord: start_with() has not run");
        return NULL;
    }
    GRecord *g = (GRecord *)type->tp_alloc(type, 0);
    if (g == NULL) return NULL;
    for (int i = 0; i < G_GIVEN; i++) g->f[i] = Py_NewRef(given[i]);
    for (int i = G_GIVEN; i < G_NFIELDS; i++)
        g->f[i] = Py_NewRef(PyTuple_GET_ITEM(at_start, i - G_GIVEN));
    return g;
}

static PyObject *GRecord_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"id", "fn", "args", "kwargs", "p", "local", NULL};
    PyObject *given[G_GIVEN];
    given[5] = Py_True;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|O:GRecord", kwlist, &given[0], &given[1],
                                     &given[2], &given[3], &given[4], &given[5]))
        return NULL;
    return (PyObject *)record_new(type, given);
}

static int GRecord_traverse(GRecord *self, visitproc visit, void *arg) {
    for (int i = 0; i < G_NFIELDS; i++) Py_VISIT(self->f[i]);
    return 0;
}

static int GRecord_clear(GRecord *self) {
    for (int i = 0; i < G_NFIELDS; i++) Py_CLEAR(self->f[i]);
    return 0;
}

/* (a subclass's instance comes here through subtype_dealloc, which holds and drops its type) */
static void GRecord_dealloc(GRecord *self) {
    PyObject_GC_UnTrack(self);
    GRecord_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* start_with(names, values): the fields after the six given, by name and in this type's
 * order, and the values a new record gives them. Once per process is enough; a later call
 * replaces the values. */
static PyObject *GRecord_start_with(PyObject *cls, PyObject *const *args, Py_ssize_t nargs) {
    (void)cls;
    if (arg_count("start_with", nargs, 2, 2) < 0) return NULL;
    PyObject *names = args[0], *values = args[1];
    if (!PyTuple_Check(names) || !PyTuple_Check(values) ||
        PyTuple_GET_SIZE(names) != G_NFIELDS - G_GIVEN ||
        PyTuple_GET_SIZE(values) != G_NFIELDS - G_GIVEN) {
        PyErr_Format(PyExc_TypeError, "GRecord.start_with: two tuples of %d items expected",
                     G_NFIELDS - G_GIVEN);
        return NULL;
    }
    for (int i = G_GIVEN; i < G_NFIELDS; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i - G_GIVEN);
        const char *mine = GRecord_members[i].name;
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, mine)) {
            PyErr_Format(PyExc_ValueError,
                         "GRecord.start_with: field %d is %R here, %s in the record", i, name,
                         mine);
            return NULL;
        }
    }
    Py_XSETREF(at_start, Py_NewRef(values));
    Py_RETURN_NONE;
}

/* many(ids, allgs, p, items): a record (id next(ids), fn, args, kwargs {}, p, local False,
 * made) for each (fn, args, made) of the list items, each put in the dict allgs under its id;
 * the list of them. */
static PyObject *GRecord_many(PyObject *cls, PyObject *const *args, Py_ssize_t nargs) {
    if (arg_count("many", nargs, 4, 4) < 0) return NULL;
    PyObject *ids = args[0], *allgs = args[1], *p = args[2], *items = args[3];
    if (!PyIter_Check(ids) || !PyDict_Check(allgs) || !PyList_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "GRecord.many: an iterator, a dict and a list expected");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    /* items is the caller's list: read it by index, each item held while it is used */
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(items); i++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            Py_DECREF(item);
            PyErr_SetString(PyExc_TypeError, "GRecord.many: items must be (fn, args, made)");
            goto fail;
        }
        PyObject *gid = PyIter_Next(ids);
        if (gid == NULL) {
            Py_DECREF(item);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "GRecord.many: the ids ran out");
            goto fail;
        }
        PyObject *kwargs = PyDict_New();
        GRecord *g = NULL;
        if (kwargs != NULL) {
            PyObject *given[G_GIVEN] = {gid, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1),
                                        kwargs, p, Py_False};
            g = record_new((PyTypeObject *)cls, given);
            Py_DECREF(kwargs);
        }
        if (g != NULL) /* made: the third item (AT_START's None replaced) */
            Py_XSETREF(g->f[G_MADE], Py_NewRef(PyTuple_GET_ITEM(item, 2)));
        Py_DECREF(item);
        int bad = g == NULL || PyDict_SetItem(allgs, gid, (PyObject *)g) < 0 ||
                  PyList_Append(out, (PyObject *)g) < 0;
        Py_DECREF(gid);
        Py_XDECREF(g);
        if (bad) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}


static PyMethodDef GRecord_methods[] = {
    {"start_with", (PyCFunction)(void (*)(void))GRecord_start_with, METH_FASTCALL | METH_CLASS,
     "start_with(names, values): the fields after the six given and their starting values"},
    {"many", (PyCFunction)(void (*)(void))GRecord_many, METH_FASTCALL | METH_CLASS,
     "many(ids, allgs, p, items): a record for each (fn, args, made) of items, in allgs"},
    {NULL}};

PyTypeObject GRecord_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.GRecord",
    .tp_basicsize = sizeof(GRecord),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "GRecord(id, fn, args, kwargs, p, local=True): a goroutine record's fields "
              "(csp_mp/_hub/g.py)",
    .tp_new = GRecord_new,
    .tp_dealloc = (destructor)GRecord_dealloc,
    .tp_traverse = (traverseproc)GRecord_traverse,
    .tp_clear = (inquiry)GRecord_clear,
    .tp_methods = GRecord_methods,
    .tp_members = GRecord_members,
};
