/* Wake-ups across Ps: select-token claims and WAKE messages, for the shared channel's hand-off.
 *
 * Twin (the Python path of the same protocol, the readable specification): csp_mp/_mp/broker.py
 *   (deliver), csp_mp/_mp/messages.py (queue_wake, flush_wakes) and csp_mp/_mp/tokens.py (claim).
 *
 * A Peers object is one P's view of the others (csp_mp/_mp/broker.py is the Python side): the
 * token tables (tokens.py: a select's word reads gen << 8 | T_WAITING until one claimer sets
 * T_DONE), every P's inbox ring and doorbell, and this P's P_SENT word (ctx.py). A claim is one
 * compare-and-swap; a wake-up to another P is one inbox frame, msgpack as messages.py's `_msg`
 * writes it, `(M_WAKE, gid, slot, gen, case, kind, data, chan_off)`, a doorbell ring and
 * P_SENT + 1, the same steps as Messages.flush_wakes for one message.
 *
 * Invariants:
 *   - a token word goes WAITING -> DONE only by a CAS here, so exactly one claimer wins (the
 *     Python path takes a token lock instead; a run uses one of the two throughout).
 *   - P_SENT is this P's word, stored only by this P, after the message is committed (the
 *     deadlock check counts messages in flight as SENT minus HANDLED).
 *   - every word is read through region_span: the token word, the P_GFLOOR word, P_SENT, and
 *     each inbox ring and doorbell where it is used (offsets checked at construction may be
 *     stale once the region is released).
 *   - a wake-up this file cannot send (a goroutine of this P, an inbox with no room, a message
 *     too big for an inline frame) goes to the `deliver` callback, which queues it in order;
 *     so does every wake-up while `divert` is set (a trace records each one's flow), and every
 *     wake-up while this P's P_OWES word says the process layer holds queued messages (it goes
 *     behind them, as on the Python path).
 *   - P_OWES (replace.py) reads 1 from before a claim until the wake-up is in an inbox or the
 *     process layer queued it (and then keeps the word itself): a P killed in between is not
 *     replaced, since a parked goroutine elsewhere would wait for ever.
 *   - everything a wake-up needs is made before the claim (wake_init, wake_prepare): once a
 *     claim is won, only the deliver callback itself can fail; then it is called once more (its
 *     first exception kept aside, then raised), and if that fails too, a RuntimeError says the
 *     wake-up was lost (peers_wake): a claimed waiter is never left asleep silently.
 */
#include "core.h"

#include <stddef.h>
#include <string.h>

#include <structmember.h>

struct Peers {
    PyObject_HEAD
    Region *region;
    int64_t p;          /* this P */
    int64_t nprocs;     /* Ps with an inbox and a bell (maxprocs) */
    int64_t ntokens;    /* token words per P */
    long long tok_off;  /* byte offset of P 0's token table */
    long long sent_off; /* this P's P_SENT word */
    long long floor_off; /* byte offset of P 0's P_GFLOOR word, -1: no P is ever replaced */
    long long pstride;  /* bytes from one P's words to the next's */
    long long owes_off; /* this P's P_OWES word, -1: not kept */
    long long *inbox;   /* inbox ring offset of each P */
    long long *bell;    /* doorbell offset of each P */
    PyObject *deliver;  /* deliver(p, gid, slot, gen, case, kind, data, chan_off, obj) */
    PyObject *no_obj;   /* deliver's "no object" */
    char divert;        /* every wake-up goes to deliver (an execution trace draws them) */
    unsigned long long ops, bytes; /* fast-path sends and receives of this P's ChanOps */
};

int peers_region_is(Peers *ps, Region *r) { return ps->region == r; }

void peers_count(Peers *ps, uint64_t nbytes) {
    ps->ops++;
    ps->bytes += nbytes;
}

/* A Peers the cyclic GC cleared (its deliver callback gone) refuses to run. */
static int peers_ready(Peers *ps) {
    if (ps->deliver != NULL) return 0;
    PyErr_SetString(PyExc_ValueError, "Peers: cleared by the garbage collector");
    return -1;
}

int peers_claim(Peers *ps, int64_t p, int64_t slot, int64_t gen) {
    if (peers_ready(ps) < 0) return -1;
    if (p < 0 || p >= ps->nprocs || slot < 0 || slot >= ps->ntokens) {
        PyErr_Format(PyExc_ValueError, "no select token %lld of P %lld", (long long)slot,
                     (long long)p);
        return -1;
    }
    long long off = ps->tok_off + (p * ps->ntokens + slot) * 8;
    if (region_span(ps->region, off, 8, 8) < 0) return -1;
    aword *w = word_at(ps->region, off);
    uint64_t want = (uint64_t)gen << TOKEN_GEN_SHIFT | T_WAITING;
    /* seq_cst: the winner's store is seen by every later claim and liveness load */
    uint64_t done = (uint64_t)gen << TOKEN_GEN_SHIFT | T_DONE;
    return atomic_compare_exchange_strong_explicit(w, &want, done, memory_order_seq_cst,
                                                   memory_order_seq_cst);
}

int peers_plain_live(Peers *ps, int64_t p, int64_t gid) {
    if (ps->floor_off < 0 || p < 0 || p >= ps->nprocs) return 1;
    /* a goroutine of a P that was replaced has an id below its successor's first */
    long long off = ps->floor_off + p * ps->pstride;
    if (region_span(ps->region, off, 8, 8) < 0) return -1;
    aword *w = word_at(ps->region, off);
    return (uint64_t)gid >= atomic_load_explicit(w, memory_order_acquire);
}

_Static_assert(WAKE_ITEMS == 8 && WAKE_ITEMS < 16,
               "wake_prepare writes the 8 items of a WAKE message behind a fixarray header");

/* msgpack: an int as a fixint or int64, bytes as bin, None as nil */
static char *mp_int(char *q, int64_t v) {
    if (v >= -32 && v < 128) {
        *q++ = (char)(uint8_t)v;
        return q;
    }
    *q++ = (char)0xd3;
    for (int s = 56; s >= 0; s -= 8) *q++ = (char)(uint8_t)((uint64_t)v >> s);
    return q;
}

static char *mp_bin(char *q, const char *data, uint64_t n) {
    if (data == NULL) {
        *q++ = (char)0xc0;
        return q;
    }
    if (n < 256) {
        *q++ = (char)0xc4;
        *q++ = (char)n;
    } else if (n < 65536) {
        *q++ = (char)0xc5;
        *q++ = (char)(n >> 8);
        *q++ = (char)n;
    } else {
        *q++ = (char)0xc6;
        for (int s = 24; s >= 0; s -= 8) *q++ = (char)(uint8_t)(n >> s);
    }
    memcpy(q, data, n);
    return q + n;
}

int wake_init(Peers *ps, wake_t *wk, int kind, const char *data, uint64_t n, PyObject *dobj,
              PyObject *obj, long long chan_off) {
    memset(wk->argv, 0, sizeof wk->argv);
    wk->kind = kind;
    wk->chan_off = chan_off;
    wk->data = data;
    wk->n = n;
    wk->dobj = dobj;
    wk->obj = obj;
    wk->owed = -1;
    wk->queued = 0;
    wk->msg = wk->small;
    wk->msg_len = 0;
    uint64_t need = 1 + 7 * 9 + 5 + n; /* the message's largest encoding */
    if (need > sizeof wk->small && (wk->msg = PyMem_Malloc(need)) == NULL) {
        wk->msg = wk->small;
        PyErr_NoMemory();
        return -1;
    }
    (void)ps;
    return 0;
}

/* P_OWES: 1 while this P holds a wake-up or message owed to another P (replace.py). Only this
 * P stores it (its hub thread: the GIL is held); relaxed stores, ordered before the claim by the
 * claim's seq_cst CAS, and read by P0 only after this process died. */
static int owe(Peers *ps, wake_t *wk) {
    if (wk->owed >= 0 || ps->owes_off < 0) return 0;
    if (region_span(ps->region, ps->owes_off, 8, 8) < 0) return -1;
    aword *w = word_at(ps->region, ps->owes_off);
    wk->owed = atomic_load_explicit(w, memory_order_relaxed) != 0;
    if (!wk->owed) atomic_store_explicit(w, 1, memory_order_relaxed);
    return 0;
}

int wake_prepare(Peers *ps, wake_t *wk, const wrec *rec) {
    if (peers_ready(ps) < 0) return -1;
    if (rec->p < 0 || rec->p >= ps->nprocs) {
        PyErr_Format(PyExc_ValueError, "a waiter record names P %lld", (long long)rec->p);
        return -1;
    }
    /* the inbox, doorbell and P_SENT word a direct send uses, checked now: a bad one raises
     * before the claim, not after it */
    ring_t g;
    if (rec->p != ps->p && (ring_open(ps->region, ps->inbox[rec->p], &g) < 0 ||
                            region_span(ps->region, ps->bell[rec->p], 8, 8) < 0 ||
                            region_span(ps->region, ps->sent_off, 8, 8) < 0))
        return -1;
    if (owe(ps, wk) < 0) return -1;
    for (int i = 0; i < WAKE_ARGS; i++) Py_CLEAR(wk->argv[i]); /* an earlier record's */
    char *q = wk->msg;
    /* a msgpack fixarray of WAKE_ITEMS: messages.py's _msg((M_WAKE, gid, slot, gen, case, kind,
     * data, chan_off)) */
    *q++ = (char)(MSGPACK_FIXARRAY | WAKE_ITEMS);
    q = mp_int(q, M_WAKE);
    q = mp_int(q, rec->gid);
    q = mp_int(q, rec->slot);
    q = mp_int(q, rec->gen);
    q = mp_int(q, rec->cas);
    q = mp_int(q, wk->kind);
    q = mp_bin(q, wk->data, wk->n);
    q = mp_int(q, wk->chan_off);
    wk->msg_len = (uint64_t)(q - wk->msg);
    /* deliver(p, gid, slot, gen, case, kind, data, chan_off, obj): ints and bytes only, which
     * cannot start a collection under the channel lock */
    long long v[] = {rec->p, rec->gid, rec->slot, rec->gen, rec->cas, wk->kind};
    for (int i = 0; i < 6; i++)
        if ((wk->argv[i] = PyLong_FromLongLong(v[i])) == NULL) return -1;
    wk->argv[6] = wk->data == NULL ? Py_NewRef(Py_None)
                  : wk->dobj != NULL ? Py_NewRef(wk->dobj)
                                     : PyBytes_FromStringAndSize(wk->data, (Py_ssize_t)wk->n);
    if (wk->argv[6] == NULL || (wk->argv[7] = PyLong_FromLongLong(wk->chan_off)) == NULL)
        return -1;
    wk->argv[8] = Py_NewRef(wk->obj == NULL ? ps->no_obj : wk->obj);
    return 0;
}

void wake_done(Peers *ps, wake_t *wk) {
    for (int i = 0; i < WAKE_ARGS; i++) Py_CLEAR(wk->argv[i]);
    if (wk->msg != wk->small) PyMem_Free(wk->msg);
    wk->msg = wk->small;
    /* owes_off was checked against the region's size at construction; a closed region's word
     * is read by nobody */
    if (wk->owed == 0 && !wk->queued && ps->region->base != NULL)
        atomic_store_explicit(word_at(ps->region, ps->owes_off), 0, memory_order_relaxed);
    wk->owed = -1;
}

/* 1 sent to P rec->p's inbox, 0 not (no room; or an inbox or doorbell that became unusable
 * since wake_prepare checked it, which the callback's path then reports) */
static int send_wake(Peers *ps, const wake_t *wk, const wrec *rec) {
    ring_t g;
    int sent = ring_open(ps->region, ps->inbox[rec->p], &g);
    if (sent == 0) sent = ring_put_bytes(ps->region, &g, wk->msg, wk->msg_len);
    if (sent <= 0) {
        PyErr_Clear(); /* a bad inbox: the callback's path reports it */
        return 0;
    }
    if (region_span(ps->region, ps->sent_off, 8, 8) == 0) {
        aword *c = word_at(ps->region, ps->sent_off);
        /* single writer (this P): a plain increment; loaders only need a recent value */
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_release);
    }
    if (bell_ring_at(ps->region, ps->bell[rec->p]) < 0) PyErr_Clear(); /* in the inbox: the
        P finds it at its next look, with or without the ring */
    return 1;
}

/* The wake-up of claimed waiter `rec` could not be delivered: RuntimeError, chained from the
 * exception pending (which deliver raised). */
static void wake_lost(const wrec *rec) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL && ev != NULL) PyException_SetTraceback(ev, tb);
    PyErr_Format(PyExc_RuntimeError,
                 "a wake-up for goroutine %lld of P %lld was lost: its wait completed (claimed) "
                 "and the wake-up could not be delivered",
                 (long long)rec->gid, (long long)rec->p);
    if (ev != NULL) {
        PyObject *e2, *v2, *t2;
        PyErr_Fetch(&e2, &v2, &t2);
        PyErr_NormalizeException(&e2, &v2, &t2);
        if (v2 != NULL) {
            PyException_SetCause(v2, Py_NewRef(ev)); /* steals the new reference */
            PyException_SetContext(v2, Py_NewRef(ev));
        }
        PyErr_Restore(e2, v2, t2);
    }
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
}

int peers_wake(Peers *ps, wake_t *wk, const wrec *rec) {
    /* wake_prepare checked rec->p; a message queued by the process layer goes first */
    if (rec->p != ps->p && !ps->divert && wk->owed != 1 && send_wake(ps, wk, rec)) return 0;
    if (ps->deliver == NULL) { /* cleared by the GC since the claim: only the inbox is left */
        if (rec->p != ps->p && send_wake(ps, wk, rec)) return 0;
        PyErr_SetString(PyExc_ValueError, "Peers: cleared by the garbage collector");
        wake_lost(rec);
        return -1;
    }
    wk->queued = rec->p != ps->p; /* the process layer keeps P_OWES for what it queues */
    PyObject *r = PyObject_Vectorcall(ps->deliver, wk->argv, WAKE_ARGS, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    /* deliver raised after the claim was won (a signal handler's KeyboardInterrupt, a
     * MemoryError): the waiter is claimed and must still be woken. Its exception is kept aside
     * while deliver is tried once more, and is then the one raised; when that fails too, a
     * RuntimeError saying the wake-up was lost is raised instead (from the first): never a
     * silent loss. shared.py's flush does the same on the Python path. (A deliver that raised
     * after its effect is retried all the same: the duplicate finds its goroutine no longer
     * waiting, which the process layer reports as a lost wake-up, loudly.) */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    r = PyObject_Vectorcall(ps->deliver, wk->argv, WAKE_ARGS, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    wake_lost(rec);
    return -1;
}

/* ---- the Python face */

static int offsets(PyObject *seq, Py_ssize_t n, long long **out, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s: %zd offsets for %zd Ps", what,
                     PySequence_Fast_GET_SIZE(fast), n);
        Py_DECREF(fast);
        return -1;
    }
    long long *a = PyMem_Calloc((size_t)n, sizeof *a);
    if (a == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (arg_ll(PySequence_Fast_GET_ITEM(fast, i), &a[i]) < 0) {
            PyMem_Free(a);
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    PyMem_Free(*out);
    *out = a;
    return 0;
}

static PyObject *Peers_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *region, *inboxes, *bells, *deliver, *no_obj;
    long long p, tok_off, ntokens, sent_off, floor_off = -1, pstride = 0, owes_off = -1;
    static char *kwlist[] = {"region", "p", "tok_off", "ntokens", "inboxes", "bells",
                             "sent_off", "deliver", "no_obj", "floor_off", "pstride",
                             "owes_off", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!LLLOOLOO|LLL:Peers", kwlist, &Region_Type,
                                     &region, &p, &tok_off, &ntokens, &inboxes, &bells,
                                     &sent_off, &deliver, &no_obj, &floor_off, &pstride,
                                     &owes_off))
        return NULL;
    Py_ssize_t n = PySequence_Size(inboxes);
    if (n < 0) return NULL;
    Region *r = (Region *)region;
    /* the products below cannot overflow: each factor is bounded by the arena's size first */
    if (p < 0 || p >= n || ntokens <= 0 || n > r->size / 8 || ntokens > r->size / 8 ||
        pstride < 0 || pstride > r->size ||
        region_span(r, tok_off, (long long)n * ntokens * 8, 8) < 0 ||
        region_span(r, sent_off, 8, 8) < 0 ||
        (owes_off >= 0 && region_span(r, owes_off, 8, 8) < 0) ||
        (floor_off >= 0 && region_span(r, floor_off, (n - 1) * pstride + 8, 8) < 0)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "Peers: bad P or token count");
        return NULL;
    }
    if (!PyCallable_Check(deliver)) {
        PyErr_SetString(PyExc_TypeError, "Peers: deliver must be callable");
        return NULL;
    }
    Peers *self = (Peers *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    /* the ring and bell offsets are checked where they are used (ring_open, bell_ring_at) */
    if (offsets(inboxes, n, &self->inbox, "inboxes") < 0 ||
        offsets(bells, n, &self->bell, "bells") < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->region = (Region *)Py_NewRef(region);
    self->deliver = Py_NewRef(deliver);
    self->no_obj = Py_NewRef(no_obj);
    self->p = p;
    self->nprocs = n;
    self->ntokens = ntokens;
    self->tok_off = tok_off;
    self->sent_off = sent_off;
    self->floor_off = floor_off;
    self->pstride = pstride;
    self->owes_off = owes_off;
    return (PyObject *)self;
}

static int Peers_traverse(Peers *self, visitproc visit, void *arg) {
    Py_VISIT(self->region);
    Py_VISIT(self->deliver);
    Py_VISIT(self->no_obj);
    return 0;
}

/* Breaks cycles through the deliver callback; the region stays (it refers to nothing of ours),
 * so a claim still checks its word. */
static int Peers_clear(Peers *self) {
    Py_CLEAR(self->deliver);
    Py_CLEAR(self->no_obj);
    return 0;
}

static void Peers_dealloc(Peers *self) {
    PyObject_GC_UnTrack(self);
    Peers_clear(self);
    Py_XDECREF(self->region);
    PyMem_Free(self->inbox);
    PyMem_Free(self->bell);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Peers_claim(Peers *self, PyObject *const *args, Py_ssize_t nargs) {
    long long p, slot, gen, cas;
    if (arg_count("claim", nargs, 4, 4) < 0 || arg_ll(args[0], &p) < 0 ||
        arg_ll(args[1], &slot) < 0 || arg_ll(args[2], &gen) < 0 || arg_ll(args[3], &cas) < 0)
        return NULL;
    int won = peers_claim(self, p, slot, gen);
    return won < 0 ? NULL : PyBool_FromLong(won);
}

static PyMemberDef Peers_members[] = {
    {"divert", T_BOOL, offsetof(Peers, divert), 0,
     "Send every wake-up through the deliver callback (for an execution trace)."},
    {"ops", T_ULONGLONG, offsetof(Peers, ops), READONLY,
     "Sends and receives the fast paths of this P's ChanOps did (runtime.metrics())."},
    {"bytes", T_ULONGLONG, offsetof(Peers, bytes), READONLY, "Encoded bytes they sent."},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Peers_methods[] = {
    {"claim", (PyCFunction)(void (*)(void))Peers_claim, METH_FASTCALL,
     "claim(p, slot, gen, case) -> bool: win select token (p, slot, gen) for `case`; False if "
     "its select already completed."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Peers_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Peers",
    .tp_basicsize = sizeof(Peers),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Peers(region, p, tok_off, ntokens, inboxes, bells, sent_off, deliver, no_obj, "
              "floor_off=-1, pstride=0, owes_off=-1): one P's token claims and wake-ups to the "
              "other Ps.",
    .tp_new = Peers_new,
    .tp_dealloc = (destructor)Peers_dealloc,
    .tp_traverse = (traverseproc)Peers_traverse,
    .tp_clear = (inquiry)Peers_clear,
    .tp_methods = Peers_methods,
    .tp_members = Peers_members,
};
