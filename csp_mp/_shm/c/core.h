/* The compiled core of csp_mp's shared-memory layer: shared declarations.
 *
 * Everything here works on one mapped arena (a Region): offsets and words, never Python objects
 * in shared state. The Python modules in csp_mp/_shm are the readable specification of the same
 * protocol (ring_frames.py: frames and head/tail words; locks.py: what a lock protects;
 * doorbell.py; csp_mp/_chan/block.py and shared.py: the channel block).
 *
 * Every word index, magic, kind and tag shared with the Python side comes from layout.h, which
 * setup.py generates from csp_mp/_shm/layout.py (the one place they are written); the module
 * exports its LAYOUT_DIGEST and native.py refuses a core built from another layout. No C code
 * reads or sets an attribute of a Python object of csp_mp: what it needs is passed in as ints,
 * offsets and callables.
 *
 * Invariants:
 *   - every offset and length that comes from Python is checked against the region before use
 *     (region_span): a bad one raises ValueError, never a wild access.
 *   - every word read or written goes through region_span (or a check it implies) in the same
 *     stretch of C that uses it: no Python code, GIL release or allocation of an object the GC
 *     tracks (a tuple or a list can start a collection, which runs finalizers; bytes and ints
 *     cannot) lies between the check and the access, unless the call holds the region
 *     (region_hold).
 *   - every shared access names its memory order and what it pairs with.
 *   - the GIL is released around every wait that can sleep (lock contention, futex waits, spins),
 *     and every such wait is timed: it wakes at least every WAIT_SLICE_NS to run signal
 *     handlers (PyErr_CheckSignals) and to see whether its region was released meanwhile.
 *   - no object of these types exists half-made: each type's tp_new checks its arguments and
 *     fills every field, and there is no tp_init to call again.
 *   - every type holding a PyObject* takes part in the cyclic GC (tp_traverse, tp_clear).
 */
#ifndef CSP_MP_CORE_H
#define CSP_MP_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "layout.h"

typedef struct {
    PyObject_HEAD
    Py_buffer view;      /* the arena mapping; view.obj is NULL once the buffer is let go */
    char *base;          /* NULL once released: every new call raises */
    Py_ssize_t size;
    Py_ssize_t locks_at; /* byte offset of lock 0's line */
    Py_ssize_t nlocks;
    Py_ssize_t holds;    /* calls running on the region across a GIL release (region_hold) */
} Region;

/* A call that keeps pointers into the arena across a GIL release or a call that can run Python
 * code holds the region: release() then closes it to new calls at once but keeps the buffer
 * until the last holder drops it, so no holder touches memory that was let go. */
static inline void region_hold(Region *r) { r->holds++; }
void region_drop(Region *r);

/* How long a wait sleeps with the GIL released before it looks at signals and its region. */
#define WAIT_SLICE_NS 20000000L
/* A wait of this many seconds or more has no deadline (about 32 years): a timeout is clamped
 * to it where it comes in, so no huge double is ever converted (only a slice is, to a
 * timespec) and such a wait still sleeps in WAIT_SLICE_NS slices with signal checks. */
#define WAIT_FOREVER_S 1e9

extern PyTypeObject Region_Type;
extern PyTypeObject Lock_Type;
extern PyTypeObject Bell_Type;
extern PyTypeObject TaskEncoder_Type;
extern PyTypeObject Spawner_Type;
extern PyTypeObject Sites_Type;
extern PyTypeObject GoEntry_Type;
extern PyTypeObject GRecord_Type;
PyObject *grecord_id(PyObject *o);
extern PyTypeObject ChanOps_Type;
extern PyTypeObject Peers_Type;
extern PyTypeObject Handles_Type;
extern PyTypeObject HandleRef_Type;
/* handles.c: the offset (a new reference) of the block of `region` that the untyped channel
 * handle `ch` names, from its HandleRef; NULL, no exception set, when it has none. */
PyObject *handle_offset(PyObject *ch, Region *region);

typedef _Atomic uint64_t aword;
typedef _Atomic uint32_t aword32;

/* 0 if [off, off + len) lies in the open region and off is a multiple of align; else -1 with
 * ValueError set. */
int region_span(Region *r, long long off, long long len, long long align);

static inline aword *word_at(Region *r, long long off) { return (aword *)(r->base + off); }

/* Locks (lock.c): robust process-shared mutexes, one per 64-byte line from locks_at. */
int lock_index_ok(Region *r, long long i);
int lock_init(Region *r, long long i);
/* 0 taken, 1 taken over from a dead holder, -1 error (exception set). Releases the GIL while
 * it sleeps. */
int lock_take(Region *r, long long i);
/* 0 released, -1 error (exception set). */
int lock_give(Region *r, long long i);
/* Before the region's buffer is let go: the mutexes of it this thread holds given back. */
void locks_let_go(Region *r);

/* Rings (ring.c): the frame format of ring_frames.py. */
typedef struct {
    char *data;
    long long off; /* the ring's arena offset (for messages) */
    uint64_t cap, mask, max_inline, lock, kind;
    aword *head, *tail;
} ring_t;

int ring_open(Region *r, long long off, ring_t *g);
/* Write one inline frame after tail word t (head word h); 1 and *nt = new tail word, or 0 when
 * it does not fit or the two words are not a valid pair (a corrupt ring reads as full; the
 * consumer's read reports it). Unpublished until the caller stores *nt. */
int ring_write(ring_t *g, uint64_t t, uint64_t h, const char *p, uint64_t n, uint64_t *nt);
/* Whether an inline frame of n bytes fits after tail word t with head word h (ring_write's
 * test, writing nothing; 0 for a corrupt pair). */
int ring_fits(ring_t *g, uint64_t t, uint64_t h, uint64_t n);
/* The frame at head word h (the ring is not empty): bytes, or (offset, length) for an
 * out-of-band frame; *nh = the head word after it. The frame must lie in the ring's data and
 * end at or before the tail word (loaded here): NULL with ValueError on a corrupt frame. */
PyObject *ring_read(ring_t *g, uint64_t h, uint64_t *nh);
/* The kind of the frame at head word h (INLINE or OOB), skipping a wrap marker; INLINE for a
 * corrupt frame, so that the ring_read or ring_view that follows reports it. */
int ring_peek_kind(ring_t *g, uint64_t h);
/* The inline frame at head word h (the ring is not empty), in place: 1 with its payload in *p,
 * *n and the head word after it in *nh; 0 for an out-of-band frame; -1 corrupt (ValueError: the
 * frame outside the data or past the tail word, loaded here).
 * The caller has the consumer side and frees the frame by storing *nh. */
int ring_view(ring_t *g, uint64_t h, const char **p, uint64_t *n, uint64_t *nh);
/* Put one inline frame, taking the ring's producer side: 1 put, 0 full or not inline-sized,
 * -1 error (exception set). */
int ring_put_bytes(Region *r, ring_t *g, const char *p, uint64_t n);

/* Doorbells (bell.c): post one wake-up to the bell at `off`; 0, or -1 with ValueError. */
int bell_ring_at(Region *r, long long off);

/* Wake-ups across Ps (wake.c): select-token claims and WAKE messages into other Ps' inboxes. */
typedef struct Peers Peers;

/* A waiter record of a shared channel's wait queue (block.py's _REC), then its data. */
typedef struct {
    int64_t p, gid, slot, gen, cas, has;
} wrec;
#define WREC_BYTES ((uint64_t)sizeof(wrec))
_Static_assert(sizeof(wrec) == REC_BYTES && offsetof(wrec, has) == REC_HAS * WORD,
               "wrec is layout.py's waiter record");

/* Win select token (p, slot, gen): 1 won, 0 its select already completed, -1 error. */
int peers_claim(Peers *ps, int64_t p, int64_t slot, int64_t gen);
/* 1 if the plain waiter record of goroutine `gid` of P `p` is of the P's current process */
int peers_plain_live(Peers *ps, int64_t p, int64_t gid);
/* One hand-off's wake-up, made ready before its waiter is claimed, so that a won claim is
 * followed by a wake-up that cannot fail for want of memory (Go's goready cannot fail): the
 * WAKE message's buffer (wake_init, before the channel lock; under it only for a wake-up that
 * carries no value, whose message fits wake_t's own buffer: nothing is allocated), the message
 * and the deliver
 * callback's arguments (wake_prepare, under the lock, before the claim: only ints and bytes are
 * made there, which cannot start a collection). It also keeps this P's P_OWES word (replace.py)
 * set from before the claim until the wake-up is in an inbox or queued by the process layer. */
#define WAKE_ARGS 9
typedef struct {
    int kind;
    long long chan_off;
    const char *data;           /* the value sent, NULL: none */
    uint64_t n;
    PyObject *dobj;             /* the value as bytes when the caller has them, else NULL */
    PyObject *obj;              /* the sent object, NULL: none */
    char small[512], *msg;      /* the WAKE message: small, or PyMem_Malloc'd */
    uint64_t msg_len;
    PyObject *argv[WAKE_ARGS];  /* deliver's arguments, all NULL until wake_prepare */
    int owed;                   /* -1: P_OWES untouched; 0: this wake-up set it; 1: already set
                                 * (the process layer holds queued messages: go behind them) */
    int queued;                 /* deliver took a wake-up for another P: it keeps P_OWES */
} wake_t;
/* Before the channel lock: the wake-up of `kind` for channel `chan_off` carrying `data` (NULL:
 * none; `dobj` its bytes object if the caller has one, `obj` the sent object). 0 or -1. */
int wake_init(Peers *ps, wake_t *wk, int kind, const char *data, uint64_t n, PyObject *dobj,
              PyObject *obj, long long chan_off);
/* Under the lock, before claiming `rec`: its message and arguments made, P_OWES set. 0 / -1. */
int wake_prepare(Peers *ps, wake_t *wk, const wrec *rec);
/* After the lock: wake the claimed waiter `rec` (a WAKE message in its P's inbox and a ring of
 * its doorbell; or, for a goroutine of this P, an inbox without room, a process layer with
 * messages queued, the deliver callback). 0, or -1 when the callback raised: it was called
 * once more; its first exception is pending if that delivered the wake-up, else a RuntimeError
 * saying the wake-up was lost. */
int peers_wake(Peers *ps, wake_t *wk, const wrec *rec);
/* Last, in every case: what wake_init and wake_prepare took given back, P_OWES cleared when
 * this wake-up set it and nothing was queued since. */
void wake_done(Peers *ps, wake_t *wk);
/* Peers_Type's check for ChanOps' argument. */
int peers_region_is(Peers *ps, Region *r);
/* One fast-path operation of a ChanOps of this P, sending `nbytes` (0 for a receive). */
void peers_count(Peers *ps, uint64_t nbytes);

/* Region methods, one group per file; the table is in module.c. */
#define RMETH(name) PyObject *name(Region *r, PyObject *const *args, Py_ssize_t nargs)
RMETH(R_load); RMETH(R_store); RMETH(R_cas); RMETH(R_fetch_add);
RMETH(R_iload); RMETH(R_istore); RMETH(R_iadd); RMETH(R_iswap); RMETH(R_icas);
RMETH(R_lock_init); RMETH(R_lock); RMETH(R_unlock); RMETH(R_lock_owner);
RMETH(R_locks_orphaned);
RMETH(R_ring_try_put); RMETH(R_ring_put_locked); RMETH(R_ring_try_get); RMETH(R_ring_get_locked);
RMETH(R_ring_put_many); RMETH(R_ring_get_many); RMETH(R_ring_len); RMETH(R_ring_move_locked);
RMETH(R_chan_send); RMETH(R_chan_recv); RMETH(R_chan_poll);
RMETH(R_chan_retire); RMETH(R_chan_reopen);
/* chan.c's block operations for handles.c: 1 retired / 0 not / -1 error; 0 / -1 error; the
 * word `i` (1: the capacity) of a live channel block whose id is `id`, else -1. */
int chan_retire_at(Region *r, long long off);
int chan_reopen_at(Region *r, long long off, long long cap);
long long chan_word_if(Region *r, long long off, uint64_t id, int i);
/* module.c's bounded word stacks (the spare pool): 1 popped into *v / 0 empty / -1 error; 1
 * pushed / 0 full / -1 error. */
int stack_pop_at(Region *r, long long at, long long lock, uint64_t *v);
int stack_push_at(Region *r, long long at, long long lock, uint64_t v, long long max);
RMETH(R_bell_ring);

/* Argument helpers: 0 ok, -1 with TypeError set. */
int arg_count(const char *fn, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi);
int arg_ll(PyObject *o, long long *out);
int arg_u64(PyObject *o, uint64_t *out);
/* A number of seconds: 0 ok, -1 with ValueError for NaN, or for an infinity or a negative
 * number where `inf_ok` / `neg_ok` does not allow one (TypeError for a non-number). */
int arg_seconds(const char *what, PyObject *o, int inf_ok, int neg_ok, double *out);

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
