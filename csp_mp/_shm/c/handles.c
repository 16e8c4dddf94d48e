/* A P's handles on shared channels, registered and released in one call each.
 *
 * Twin (the Python path of the same protocol, the readable specification): csp_mp/_mp/promote.py
 *   (HandleRef, _register, new_handle) and Broker.release_handles.
 *
 * csp_mp/_mp/promote.py has the protocol (and its Python path: HandleRef, _register and
 * new_handle; Broker.release_handles is the release): a handle is the one Chan of this P for a
 * channel block, known through a weak reference whose callback queues it on the dead list,
 * kept in `chans` (by block offset) and `names` (by the 8 bytes naming the block). Here the weak
 * reference is a HandleRef of this file (a weakref subtype with its fields in C):
 *
 *   register(ch, st): ref = HandleRef to ch, its callback dead.append, entered in chans and
 *                     names; off and st as the Python HandleRef's, drop() a method doing what
 *                     st.drop_name does (one off the block's reference word);
 *   release():        empties the dead list; for each HandleRef, forgets it (if still the
 *                     registered one) and takes its count off the block's reference word
 *                     (REFS_BYTE, an atomic add). A block whose count reached 0 is ended here
 *                     when SharedChan.destroy's first case holds (chan_retire: empty, no ring
 *                     grown): its state joins this P's spares of its size, or its offset the
 *                     runtime's pool (SparePool), or, both full, it goes to `freed` (to free:
 *                     SharedChan._free). Other states go to `ended` (to destroy), refs that
 *                     are not channel handles (atomics, semaphores) to `others`; when one of
 *                     the three is not empty, slow(ended, others, freed) does that, and the
 *                     loop goes on while the dead list is not (a destroyed channel's values
 *                     may hold handles).
 *
 * and the common cases of SharedChan.create and attach, for an untyped channel:
 *
 *   promote(ch, cap) -> st | off | None: a state from this P's spares for a buffer of `cap`,
 *                     else the pool's block if this P cached a state for it (same id),
 *                     reopened (chan_reopen), made ch's state and registered; the pool's
 *                     block alone (an int: the caller reopens and attaches it) when this P has
 *                     no state for it; None when neither has one;
 *   attach_new(name) -> Chan | None: a new untyped handle, registered, with this P's cached
 *                     state for the block the 8 name bytes give (little-endian offset;
 *                     chan_states) while it is a live channel with that state's id; None
 *                     otherwise.
 *
 * Python keeps the objects: this file reads and sets no attribute of them. What it must know of
 * a channel state it asks the `facts` hook, facts(st) -> (off, uid, untyped), and what it must
 * set (the state's capacity, a Chan's state, a new Chan) the `adopt` hook does,
 * adopt(ch | None, st, cap) -> Chan; both are promote.py's, given at construction. Every state
 * registered here is one of this P's broker (its chan_states and spares, or the caller's).
 *
 * A channel made live here (promote) adds one to this P's live-channel word (live_off), one
 * ended here (release) takes one off, as SharedChan.create and destroy do.
 *
 * Invariants:
 *   - a reference word, id word or pool entry is read through region_span in the same stretch of
 *     C that uses it; an offset read from the arena (a pool entry) is bounded before it makes an
 *     offset.
 *   - a Python object this file uses across a call that can run Python code (an attribute, a
 *     dict or list operation on objects of ours, the slow callback) is held by a strong
 *     reference: a spare list and the state taken from it, a cached state, the dead list.
 *   - what an operation counted or took is given back when it fails: a block reopened by a
 *     promotion that fails is retired again and its live count taken off, its registration
 *     and its `states` entry taken back (adopt, which cannot be, runs last), and its state
 *     goes back to the spares or its offset back to the pool; a registration that fails
 *     half-way enters nothing; a block whose last reference was dropped goes to `ended` or
 *     `freed` even when a later step fails (a lookup, a retire, an append to the spares), and
 *     what a release pass collected reaches slow() even when the pass stops on an error.
 *   - the dead list is a list itself (not a subclass): the weak references' callback is
 *     list.append, bound once at construction, the only name this file looks up.
 *   - a HandleRef is made only here (no instantiation from Python); Handles is made whole by its
 *     tp_new and, once the cyclic GC cleared it, raises instead of running.
 *   - a HandleRef is the weak reference of its Chan that names the channel in task frames
 *     (handle_offset, for task.c): it holds the block's offset, whether the channel is untyped,
 *     and the region it is a block of.
 */
#include "core.h"

#include <stddef.h>

#include <structmember.h>

typedef struct {
    PyWeakReference wr;
    PyObject *off;  /* int: the block's offset (chans' key) */
    PyObject *key;  /* bytes: its name (names' key) */
    PyObject *st;   /* this P's state of the channel */
    Region *region; /* the arena the block is in */
    long long o;    /* off */
    char untyped;   /* the channel carries any value (its name may travel in a task frame) */
} HandleRef;

static void HandleRef_dealloc(HandleRef *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->off);
    Py_CLEAR(self->key);
    Py_CLEAR(self->st);
    Py_CLEAR(self->region);
    _PyWeakref_RefType.tp_dealloc((PyObject *)self);
}

static int HandleRef_traverse(HandleRef *self, visitproc visit, void *arg) {
    Py_VISIT(self->st);
    Py_VISIT(self->region);
    return _PyWeakref_RefType.tp_traverse((PyObject *)self, visit, arg);
}

static int HandleRef_clear(HandleRef *self) {
    Py_CLEAR(self->st);
    Py_CLEAR(self->region);
    return _PyWeakref_RefType.tp_clear((PyObject *)self);
}

/* drop() -> int: one name in flight consumed (this handle holds the block for its P): one off
 * the block's reference word, whose old value it returns (SharedChan.drop_name's). */
static PyObject *HandleRef_drop(HandleRef *self, PyObject *unused) {
    (void)unused;
    if (self->region == NULL) {
        PyErr_SetString(PyExc_ValueError, "HandleRef: no channel block");
        return NULL;
    }
    if (region_span(self->region, self->o + REFS_BYTE, 8, 8) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(atomic_fetch_add_explicit(
        word_at(self->region, self->o + REFS_BYTE), (uint64_t)-1, memory_order_seq_cst));
}

static PyMemberDef HandleRef_members[] = {
    {"off", T_OBJECT, offsetof(HandleRef, off), READONLY, "The channel block's offset."},
    {"st", T_OBJECT, offsetof(HandleRef, st), READONLY, "This P's state of the channel."},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef HandleRef_methods[] = {
    {"drop", (PyCFunction)HandleRef_drop, METH_NOARGS,
     "drop() -> int: consume one name in flight, which this handle already holds for its P "
     "(the reference word's old value)."},
    {NULL, NULL, 0, NULL},
};

PyObject *handle_offset(PyObject *ch, Region *region) {
    Py_ssize_t wlo = Py_TYPE(ch)->tp_weaklistoffset;
    if (wlo <= 0 || region == NULL) return NULL;
    PyWeakReference *w = *(PyWeakReference **)((char *)ch + wlo);
    for (; w != NULL; w = w->wr_next) {
        if (!Py_IS_TYPE(w, &HandleRef_Type)) continue;
        HandleRef *ref = (HandleRef *)w;
        if (ref->untyped && ref->region == region && ref->off != NULL)
            return Py_NewRef(ref->off);
    }
    return NULL;
}

PyTypeObject HandleRef_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.HandleRef",
    .tp_basicsize = sizeof(HandleRef),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_doc = "A weak reference to this P's handle on a shared channel (made by Handles only).",
    .tp_base = &_PyWeakref_RefType,
    .tp_dealloc = (destructor)HandleRef_dealloc,
    .tp_traverse = (traverseproc)HandleRef_traverse,
    .tp_clear = (inquiry)HandleRef_clear,
    .tp_members = HandleRef_members,
    .tp_methods = HandleRef_methods,
};

typedef struct {
    PyObject_HEAD
    Region *region;
    PyObject *chans, *names, *dead, *dead_append, *states, *spares;
    PyObject *facts;     /* facts(st) -> (off, uid, untyped): what this file knows of a state */
    PyObject *adopt;     /* adopt(ch | None, st, cap) -> Chan: st (capacity cap) made ch's state,
                          * or a new untyped Chan's */
    PyObject *slow;      /* slow(ended, others, freed): what release leaves to Python */
    PyObject *pool_ats;  /* buffer ring size -> byte offset of the pool's stack for it */
    Py_ssize_t own_max;  /* spares kept a size (block.py's _OWN_SPARES) */
    long long pool_lock; /* the pool's lock */
    long long pool_max;  /* the pool's blocks a size (_SPARE_SLOTS) */
    long long live_off;  /* this P's word counting live channels (mod 2**64; only it writes) */
} Handles;

static int count_live(Handles *self, int64_t d) {
    if (region_span(self->region, self->live_off, 8, 8) < 0) return -1;
    aword *w = word_at(self->region, self->live_off);
    atomic_store_explicit(w, atomic_load_explicit(w, memory_order_relaxed) + (uint64_t)d,
                          memory_order_relaxed);
    return 0;
}

/* What the facts hook says of state st (a strong reference of the caller): 0, or -1 with an
 * exception (TypeError for an answer that is not (int, int, bool)). */
static int state_facts(Handles *self, PyObject *st, long long *off, uint64_t *uid,
                       int *untyped) {
    PyObject *t = PyObject_CallOneArg(self->facts, st);
    if (t == NULL) return -1;
    int rc = -1;
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 3) {
        PyErr_SetString(PyExc_TypeError, "Handles: facts(st) must give (off, uid, untyped)");
        goto done;
    }
    if (arg_ll(PyTuple_GET_ITEM(t, 0), off) < 0 || arg_u64(PyTuple_GET_ITEM(t, 1), uid) < 0 ||
        (*untyped = PyObject_IsTrue(PyTuple_GET_ITEM(t, 2))) < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(t);
    return rc;
}

static PyObject *Handles_make(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *region, *chans, *names, *dead, *states, *spares, *pool_ats, *facts, *adopt;
    PyObject *slow;
    Py_ssize_t own_max;
    long long pool_lock, pool_max, live_off;
    static char *kwlist[] = {"region", "chans", "names", "dead", "states", "spares", "own_max",
                             "pool_ats", "pool_lock", "pool_max", "facts", "adopt", "slow",
                             "live_off", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!O!O!nO!LLOOOL:Handles", kwlist,
                                     &Region_Type, &region, &PyDict_Type, &chans, &PyDict_Type,
                                     &names, &PyList_Type, &dead, &PyDict_Type, &states,
                                     &PyDict_Type, &spares, &own_max, &PyDict_Type, &pool_ats,
                                     &pool_lock, &pool_max, &facts, &adopt, &slow, &live_off))
        return NULL;
    if (!PyCallable_Check(facts) || !PyCallable_Check(adopt) || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "Handles: facts, adopt and slow must be callable");
        return NULL;
    }
    /* a list itself, not a subclass: its append (the weak references' callback) is list's own,
     * and release reads it with PyList_GET_* */
    if (!PyList_CheckExact(dead)) {
        PyErr_SetString(PyExc_TypeError, "Handles: dead must be a list (not a subclass)");
        return NULL;
    }
    if (region_span((Region *)region, live_off, 8, 8) < 0 ||
        lock_index_ok((Region *)region, pool_lock) < 0)
        return NULL;
    PyObject *append = PyObject_GetAttrString(dead, "append"); /* list.append, bound */
    if (append == NULL) return NULL;
    Handles *self = (Handles *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    self->live_off = live_off;
    self->facts = Py_NewRef(facts);
    self->adopt = Py_NewRef(adopt);
    self->slow = Py_NewRef(slow);
    self->states = Py_NewRef(states);
    self->spares = Py_NewRef(spares);
    self->pool_ats = Py_NewRef(pool_ats);
    self->own_max = own_max;
    self->pool_lock = pool_lock;
    self->pool_max = pool_max;
    self->dead_append = append;
    self->region = (Region *)Py_NewRef(region);
    self->chans = Py_NewRef(chans);
    self->names = Py_NewRef(names);
    self->dead = Py_NewRef(dead);
    return (PyObject *)self;
}

static int Handles_traverse(Handles *self, visitproc visit, void *arg) {
    Py_VISIT(self->region);
    Py_VISIT(self->chans);
    Py_VISIT(self->names);
    Py_VISIT(self->dead);
    Py_VISIT(self->dead_append);
    Py_VISIT(self->facts);
    Py_VISIT(self->adopt);
    Py_VISIT(self->states);
    Py_VISIT(self->spares);
    Py_VISIT(self->pool_ats);
    Py_VISIT(self->slow);
    return 0;
}

static int Handles_clear(Handles *self) {
    Py_CLEAR(self->chans); /* first: a finalizer run by the clearing sees it cleared (ready) */
    Py_CLEAR(self->region);
    Py_CLEAR(self->names);
    Py_CLEAR(self->dead);
    Py_CLEAR(self->dead_append);
    Py_CLEAR(self->facts);
    Py_CLEAR(self->adopt);
    Py_CLEAR(self->states);
    Py_CLEAR(self->spares);
    Py_CLEAR(self->pool_ats);
    Py_CLEAR(self->slow);
    return 0;
}

static void Handles_dealloc(Handles *self) {
    PyObject_GC_UnTrack(self);
    Handles_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A Handles the cyclic GC cleared refuses to run. */
static int ready(Handles *self) {
    if (self->chans == NULL) {
        PyErr_SetString(PyExc_ValueError, "Handles: cleared by the garbage collector");
        return -1;
    }
    return 0;
}

/* With an exception set: d[key] put back to `prev` (NULL: removed) if it still holds ref; the
 * exception kept. */
static void dict_undo(PyObject *d, PyObject *key, PyObject *ref, PyObject *prev) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *cur = PyDict_GetItemWithError(d, key); /* compared, not used */
    if (cur == ref && (prev != NULL ? PyDict_SetItem(d, key, prev) : PyDict_DelItem(d, key)) < 0)
        PyErr_WriteUnraisable(d);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

/* A registration taken back (an exception set): ref out of chans and names (the entries it
 * replaced put back) and emptied, so that a holder of it (Python code run meanwhile could
 * have taken one) has no handle: handle_offset skips it and release_one ignores it. */
static void unregister(Handles *self, HandleRef *ref, PyObject *prev_chan, PyObject *prev_name) {
    if (ref->off != NULL) dict_undo(self->chans, ref->off, (PyObject *)ref, prev_chan);
    if (ref->key != NULL) dict_undo(self->names, ref->key, (PyObject *)ref, prev_name);
    ref->untyped = 0;
    Py_CLEAR(ref->off); /* ints and bytes: no Python code runs; st stays held by the caller */
    Py_CLEAR(ref->key);
    Py_CLEAR(ref->st);
}

/* ref = HandleRef(ch, dead.append) with its fields (st's block at `off`), entered in chans and
 * names: a new reference to it, the entries it replaced in *prev (new references or NULL), for
 * unregister; NULL on error with nothing entered. */
static HandleRef *register_ref(Handles *self, PyObject *ch, PyObject *st, long long off,
                               int untyped, PyObject *prev[2]) {
    prev[0] = prev[1] = NULL;
    if (off < 0 || off > self->region->size) {
        PyErr_Format(PyExc_ValueError, "Handles: a channel block at %lld", off);
        return NULL;
    }
    PyObject *args = PyTuple_Pack(2, ch, self->dead_append);
    if (args == NULL) return NULL;
    HandleRef *ref = (HandleRef *)_PyWeakref_RefType.tp_new(&HandleRef_Type, args, NULL);
    Py_DECREF(args);
    if (ref == NULL) return NULL;
    unsigned char name[8];
    for (int i = 0; i < 8; i++) name[i] = (unsigned char)((uint64_t)off >> (8 * i)); /* little */
    if ((ref->off = PyLong_FromLongLong(off)) == NULL ||
        (ref->key = PyBytes_FromStringAndSize((const char *)name, 8)) == NULL)
        goto fail;
    ref->st = Py_NewRef(st);
    ref->region = (Region *)Py_NewRef(self->region);
    ref->o = off;
    ref->untyped = (char)untyped;
    /* the entries replaced, held: a failure puts them back */
    prev[0] = Py_XNewRef(PyDict_GetItemWithError(self->chans, ref->off));
    if (prev[0] == NULL && PyErr_Occurred()) goto fail;
    prev[1] = Py_XNewRef(PyDict_GetItemWithError(self->names, ref->key));
    if (prev[1] == NULL && PyErr_Occurred()) goto fail;
    if (PyDict_SetItem(self->chans, ref->off, (PyObject *)ref) < 0 ||
        PyDict_SetItem(self->names, ref->key, (PyObject *)ref) < 0)
        goto fail;
    return ref;
fail:
    unregister(self, ref, prev[0], prev[1]);
    Py_CLEAR(prev[0]);
    Py_CLEAR(prev[1]);
    Py_DECREF(ref);
    return NULL;
}

/* register_ref, kept: 0, or -1 with nothing entered */
static int do_register(Handles *self, PyObject *ch, PyObject *st, long long off, int untyped) {
    PyObject *prev[2];
    HandleRef *ref = register_ref(self, ch, st, off, untyped, prev);
    if (ref == NULL) return -1;
    Py_XDECREF(prev[0]);
    Py_XDECREF(prev[1]);
    Py_DECREF(ref);
    return 0;
}

static PyObject *Handles_register(Handles *self, PyObject *const *args, Py_ssize_t nargs) {
    long long off;
    uint64_t uid;
    int untyped;
    if (ready(self) < 0 || arg_count("register", nargs, 2, 2) < 0 ||
        state_facts(self, args[1], &off, &uid, &untyped) < 0 ||
        do_register(self, args[0], args[1], off, untyped) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* block.py's _buf_bytes: the buffer ring size of a channel of capacity `cap` (layout.py's
 * numbers; a capacity below 0, as a corrupt capacity word can read, counts as 0) */
static long long buf_bytes(long long cap) {
    long long slots = cap < 0 ? 0 : cap < CHAN_BUF_CAP_MAX ? cap : CHAN_BUF_CAP_MAX;
    long long n = slots * CHAN_BUF_PER_SLOT, b = CHAN_BUF_MIN;
    while (b < n) b <<= 1;
    return b;
}

/* this P's spares for a buffer of `cap` (a new reference; NULL without error: none made yet) */
static PyObject *spare_list(Handles *self, long long cap) {
    PyObject *k = PyLong_FromLongLong(buf_bytes(cap));
    if (k == NULL) return NULL;
    PyObject *lst = PyDict_GetItemWithError(self->spares, k);
    Py_DECREF(k);
    return lst != NULL && PyList_CheckExact(lst) ? Py_NewRef(lst) : NULL;
}

/* the byte offset of the pool's stack for a buffer of `cap`: 1 found, 0 none, -1 error */
static int pool_at(Handles *self, long long cap, long long *at) {
    PyObject *k = PyLong_FromLongLong(buf_bytes(cap));
    if (k == NULL) return -1;
    PyObject *v = PyDict_GetItemWithError(self->pool_ats, k);
    Py_DECREF(k);
    if (v == NULL) return PyErr_Occurred() ? -1 : 0;
    *at = PyLong_AsLongLong(v);
    return *at == -1 && PyErr_Occurred() ? -1 : 1;
}

/* st (a strong reference of the caller) is this P's untyped state of the block with id word
 * `id`: 1, 0, -1 */
static int state_fits(Handles *self, PyObject *st, uint64_t id) {
    long long off;
    uint64_t uid;
    int untyped;
    if (state_facts(self, st, &off, &uid, &untyped) < 0) return -1;
    return untyped && uid == id;
}

/* The pool's block `v` back on its stack, after a promotion that failed (an exception is set
 * and stays the one raised). */
static void pool_give_back(Handles *self, long long at, uint64_t v) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (stack_push_at(self->region, at, self->pool_lock, v, self->pool_max) < 0)
        PyErr_WriteUnraisable((PyObject *)self); /* the block is lost to this run */
    PyErr_Restore(et, ev, tb);
}

/* Reopen st's block (at `off`, capacity `cap`), register ch on it, enter st in states, make
 * it ch's state (adopt, last: the one step that cannot be taken back): st, or NULL with every
 * step undone, the registration and the states entry taken back, the block retired again and
 * its live count given back (the caller returns st, or the block, to where it came from). */
static PyObject *take_state(Handles *self, PyObject *ch, PyObject *st, long long o,
                            long long cap) {
    if (chan_reopen_at(self->region, o, cap) < 0) return NULL;
    if (count_live(self, 1) < 0) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (chan_retire_at(self->region, o) < 0) PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return NULL;
    }
    PyObject *off = PyLong_FromLongLong(o), *capo = PyLong_FromLongLong(cap), *got = NULL;
    PyObject *prev[2] = {NULL, NULL}, *prev_st = NULL;
    HandleRef *ref = NULL;
    int set = 0;
    if (off == NULL || capo == NULL ||
        (ref = register_ref(self, ch, st, o, 1, prev)) == NULL)
        goto fail;
    prev_st = Py_XNewRef(PyDict_GetItemWithError(self->states, off));
    if ((prev_st == NULL && PyErr_Occurred()) || PyDict_SetItem(self->states, off, st) < 0)
        goto fail;
    set = 1;
    if ((got = PyObject_CallFunctionObjArgs(self->adopt, ch, st, capo, NULL)) == NULL) goto fail;
    Py_DECREF(got);
    Py_DECREF(ref);
    Py_XDECREF(prev[0]);
    Py_XDECREF(prev[1]);
    Py_XDECREF(prev_st);
    Py_DECREF(off);
    Py_DECREF(capo);
    return Py_NewRef(st);
fail:
    if (set) dict_undo(self->states, off, st, prev_st);
    if (ref != NULL) {
        unregister(self, ref, prev[0], prev[1]);
        Py_DECREF(ref);
    }
    Py_XDECREF(prev[0]);
    Py_XDECREF(prev[1]);
    Py_XDECREF(prev_st);
    Py_XDECREF(off);
    Py_XDECREF(capo);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    /* nobody was told of the block: end it again, uncount it */
    if (chan_retire_at(self->region, o) < 0 || count_live(self, -1) < 0) PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return NULL;
}

/* promote's second case: the pool's block for `cap` */
static PyObject *promote_from_pool(Handles *self, PyObject *ch, long long cap) {
    long long at;
    uint64_t v;
    int r = pool_at(self, cap, &at);
    if (r <= 0) {
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    if ((r = stack_pop_at(self->region, at, self->pool_lock, &v)) <= 0) {
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *res = NULL, *st = NULL, *off = PyLong_FromUnsignedLongLong(v);
    if (off == NULL) goto done;
    st = PyDict_GetItemWithError(self->states, off);
    if (st == NULL) { /* no state here: the caller attaches the block */
        if (!PyErr_Occurred()) res = Py_NewRef(off);
        goto done;
    }
    Py_INCREF(st); /* state_fits runs Python code */
    /* v is a word of the arena: bounded before it makes an offset */
    if (v > (uint64_t)self->region->size ||
        region_span(self->region, (long long)v + ID_BYTE, 8, 8) < 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "a spare pool names block %llu outside the arena",
                         (unsigned long long)v);
        goto done;
    }
    uint64_t id = atomic_load_explicit(word_at(self->region, (long long)v + ID_BYTE),
                                       memory_order_relaxed);
    int fits = state_fits(self, st, id);
    if (fits >= 0) res = fits ? take_state(self, ch, st, (long long)v, cap) : Py_NewRef(off);
done:
    if (res == NULL) pool_give_back(self, at, v);
    Py_XDECREF(st);
    Py_XDECREF(off);
    return res;
}

static PyObject *Handles_promote(Handles *self, PyObject *const *args, Py_ssize_t nargs) {
    long long cap;
    if (ready(self) < 0 || arg_count("promote", nargs, 2, 2) < 0 || arg_ll(args[1], &cap) < 0)
        return NULL;
    PyObject *ch = args[0];
    PyObject *lst = spare_list(self, cap);
    if (lst == NULL) {
        if (PyErr_Occurred()) return NULL;
        return promote_from_pool(self, ch, cap);
    }
    Py_ssize_t n = PyList_GET_SIZE(lst);
    if (n == 0) {
        Py_DECREF(lst);
        return promote_from_pool(self, ch, cap);
    }
    PyObject *st = Py_NewRef(PyList_GET_ITEM(lst, n - 1)); /* facts runs Python code */
    PyObject *res = NULL;
    long long off;
    uint64_t uid;
    int untyped;
    if (state_facts(self, st, &off, &uid, &untyped) < 0) goto done;
    if (!untyped) { /* a typed channel's state: Python's create reopens it */
        res = Py_NewRef(Py_None);
        goto done;
    }
    /* the list may have changed meanwhile: take st itself, wherever it is now */
    n = PyList_GET_SIZE(lst);
    Py_ssize_t i = n - 1;
    while (i >= 0 && PyList_GET_ITEM(lst, i) != st) i--;
    if (i < 0) { /* taken by someone else: none here after all */
        res = Py_NewRef(Py_None);
        goto done;
    }
    if (PyList_SetSlice(lst, i, i + 1, NULL) < 0) goto done;
    res = take_state(self, ch, st, off, cap);
    if (res == NULL) { /* back among the spares (take_state ended the block again) */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (PyList_Append(lst, st) < 0) PyErr_WriteUnraisable((PyObject *)self);
        PyErr_Restore(et, ev, tb);
    }
done:
    Py_DECREF(st);
    Py_DECREF(lst);
    return res;
}

static PyObject *Handles_attach_new(Handles *self, PyObject *name) {
    if (ready(self) < 0) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(name, &b, PyBUF_SIMPLE) < 0) return NULL;
    if (b.len != 8) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "attach_new: a channel's name is 8 bytes");
        return NULL;
    }
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--) u = u << 8 | ((const unsigned char *)b.buf)[i]; /* little */
    PyBuffer_Release(&b);
    PyObject *off = PyLong_FromUnsignedLongLong(u);
    if (off == NULL) return NULL;
    PyObject *st = PyDict_GetItemWithError(self->states, off); /* borrowed */
    if (st == NULL) {
        Py_DECREF(off);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(st);
    PyObject *res = NULL, *capo = NULL, *ch = NULL;
    long long o = (long long)u, cap, st_off;
    uint64_t id;
    int untyped;
    if (state_facts(self, st, &st_off, &id, &untyped) < 0) goto done;
    if (!untyped || st_off != o || (cap = chan_word_if(self->region, o, id, 1)) < 0) {
        res = Py_NewRef(Py_None); /* typed, or the block is no longer that channel */
        goto done;
    }
    if ((capo = PyLong_FromLongLong(cap)) == NULL ||
        (ch = PyObject_CallFunctionObjArgs(self->adopt, Py_None, st, capo, NULL)) == NULL ||
        do_register(self, ch, st, o, 1) < 0)
        goto done;
    res = Py_NewRef(ch);
done:
    Py_XDECREF(ch);
    Py_XDECREF(capo);
    Py_DECREF(st);
    Py_DECREF(off);
    return res;
}

/* With an exception set: item appended to lst all the same; -1, the exception kept. */
static int append_failing(PyObject *lst, PyObject *item) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (PyList_Append(lst, item) < 0) PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return -1;
}

/* One dead HandleRef: forget it if it is still the registered one, take its count off the
 * block; st appended to `ended` when that was the last reference. 0, or -1 on error. */
static int release_one(Handles *self, HandleRef *ref, PyObject *ended, PyObject *freed) {
    if (ref->off == NULL || ref->key == NULL) return 0; /* made by weakref's own new: no handle */
    PyObject *cur = PyDict_GetItemWithError(self->chans, ref->off); /* compared, not used */
    if (cur == NULL && PyErr_Occurred()) return -1;
    if (cur == (PyObject *)ref) {
        if (PyDict_DelItem(self->chans, ref->off) < 0) return -1;
        if (PyDict_DelItem(self->names, ref->key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
            PyErr_Clear(); /* names was emptied for a new runtime */
        }
    }
    if (ref->st == NULL) return 0;
    long long off = ref->o;
    /* the block's words from its capacity (word 1) to its reference word */
    if (region_span(self->region, off, REFS_BYTE + 8, 8) < 0) return -1;
    uint64_t old = atomic_fetch_add_explicit(word_at(self->region, off + REFS_BYTE),
                                             (uint64_t)-1, memory_order_seq_cst);
    if (old != 1) return 0;
    /* the last reference: end it here if it is empty and this P's spares have room; from here
     * on the state goes to `ended` (or `freed`) whatever fails, or its block is lost */
    long long cap = (long long)atomic_load_explicit(word_at(self->region, off + 8),
                                                    memory_order_relaxed);
    PyObject *lst = spare_list(self, cap);
    if (lst == NULL) /* none made yet (destroy makes the list), or the lookup failed */
        return PyErr_Occurred() ? append_failing(ended, ref->st) : PyList_Append(ended, ref->st);
    int r = chan_retire_at(self->region, off);
    if (r <= 0) { /* it holds values or records, or a ring grew (or its words are not a
                   * channel's: destroy reports it): destroy empties it */
        Py_DECREF(lst);
        return r < 0 ? append_failing(ended, ref->st) : PyList_Append(ended, ref->st);
    }
    if (count_live(self, -1) < 0) { /* retired: Python frees it */
        Py_DECREF(lst);
        return append_failing(freed, ref->st);
    }
    if (PyList_GET_SIZE(lst) < self->own_max) {
        r = PyList_Append(lst, ref->st);
        Py_DECREF(lst);
        /* retired and uncounted: without room among the spares, Python frees it */
        return r < 0 ? append_failing(freed, ref->st) : 0;
    }
    Py_DECREF(lst);
    long long at;
    if ((r = pool_at(self, cap, &at)) == 1)
        r = stack_push_at(self->region, at, self->pool_lock, (uint64_t)off, self->pool_max);
    if (r == 1) return 0;
    /* no room in the pool (or it failed): Python frees the block */
    return r < 0 ? append_failing(freed, ref->st) : PyList_Append(freed, ref->st);
}

/* One pass over the dead list into ended, others and freed: 0, or -1 on error */
static int release_pass(Handles *self, PyObject *ended, PyObject *others, PyObject *freed) {
    PyObject *dead = self->dead;
    while (PyList_GET_SIZE(dead) > 0) {
        Py_ssize_t n = PyList_GET_SIZE(dead);
        PyObject *ref = Py_NewRef(PyList_GET_ITEM(dead, n - 1));
        if (PyList_SetSlice(dead, n - 1, n, NULL) < 0) {
            Py_DECREF(ref);
            return -1;
        }
        int r = Py_IS_TYPE(ref, &HandleRef_Type)
                    ? release_one(self, (HandleRef *)ref, ended, freed)
                    : PyList_Append(others, ref);
        Py_DECREF(ref);
        if (r < 0) return -1;
    }
    return 0;
}

static PyObject *Handles_release(Handles *self, PyObject *unused) {
    (void)unused;
    if (ready(self) < 0) return NULL;
    PyObject *dead = Py_NewRef(self->dead); /* slow() runs Python code */
    int failed = 0;
    while (!failed && PyList_GET_SIZE(dead) > 0) {
        PyObject *ended = PyList_New(0), *others = PyList_New(0), *freed = PyList_New(0);
        PyObject *res = NULL;
        if (ended != NULL && others != NULL && freed != NULL) {
            failed = release_pass(self, ended, others, freed) < 0;
            /* what this pass collected is ended even when the pass failed half-way */
            PyObject *et = NULL, *ev = NULL, *tb = NULL;
            if (failed) PyErr_Fetch(&et, &ev, &tb);
            if (PyList_GET_SIZE(ended) || PyList_GET_SIZE(others) || PyList_GET_SIZE(freed))
                res = PyObject_CallFunctionObjArgs(self->slow, ended, others, freed, NULL);
            else
                res = Py_NewRef(Py_None);
            if (failed) {
                if (res == NULL) PyErr_WriteUnraisable(self->slow);
                PyErr_Restore(et, ev, tb);
            }
        } else {
            failed = 1;
        }
        Py_XDECREF(ended);
        Py_XDECREF(others);
        Py_XDECREF(freed);
        if (res == NULL) failed = 1;
        Py_XDECREF(res);
    }
    Py_DECREF(dead);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Handles_methods[] = {
    {"register", (PyCFunction)(void (*)(void))Handles_register, METH_FASTCALL,
     "register(ch, st): make ch this P's handle on the channel of state st."},
    {"promote", (PyCFunction)(void (*)(void))Handles_promote, METH_FASTCALL,
     "promote(ch, cap) -> st | off | None: ch's new shared state from this P's spares or the "
     "pool, registered; a pool block this P has no state for; None."},
    {"attach_new", (PyCFunction)Handles_attach_new, METH_O,
     "attach_new(name) -> Chan | None: a new handle on the block named by the 8 bytes `name` "
     "with this P's cached state."},
    {"release", (PyCFunction)Handles_release, METH_NOARGS,
     "release(): empty the dead list, calling slow(ended, others, freed) for what is left to "
     "Python."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Handles_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Handles",
    .tp_basicsize = sizeof(Handles),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Handles(region, chans, names, dead, states, spares, own_max, pool_ats, "
              "pool_lock, pool_max, facts, adopt, slow, live_off): a P's handles on shared "
              "channels, registered and released in one call each.",
    .tp_new = Handles_make,
    .tp_traverse = (traverseproc)Handles_traverse,
    .tp_clear = (inquiry)Handles_clear,
    .tp_dealloc = (destructor)Handles_dealloc,
    .tp_methods = Handles_methods,
};
