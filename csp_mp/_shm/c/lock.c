/* Robust process-shared locks: glibc's pthread mutex, one per 64-byte line of the arena.
 *
 * Twin (the Python path of the same protocol, the readable specification): csp_mp/_shm/locks.py
 *   (ShmLock).
 *
 * The kernel's robust-futex list (which glibc registers for every thread) marks a mutex whose
 * holder died, SIGKILL included; the next locker gets EOWNERDEAD, declares it consistent and
 * learns it took it over (lock() returns True), as ShmLock.acquire does on the Python path.
 * What a lock protects does not always commit with one store (a channel send stores a ring's
 * tail, then the channel's count): a takeover of a state lock is counted (TAKEOVERS_BYTE) so
 * the runtime knows the state may be torn.
 *
 * The semantics are locks.py's, on both paths: a lock belongs to the thread that took it;
 * owner() is the holder's process id; a relock by the holder and an unlock by any other
 * thread raise RuntimeError.
 *
 * Invariants:
 *   - a lock is unlocked by the thread that locked it (error-checking mutex: a wrong unlock or
 *     a relock by the holder raises instead of corrupting or deadlocking).
 *   - a contended lock spins briefly, then sleeps with the GIL released (its holder may be a
 *     thread of this process that needs the GIL to finish), in timed slices of WAIT_SLICE_NS:
 *     between two slices it runs signal handlers (Ctrl-C ends a wait behind a stopped holder)
 *     and gives up if its region was released meanwhile, the lock given back if it got it.
 *
 * Rejected: a home-made futex lock with the owner's TID: a thread has one robust list and glibc
 * owns it, so such a lock could only learn of a dead holder by polling (the Python path's way).
 */
#include "core.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SPINS 100 /* trylocks (~a few µs) before sleeping: critical sections are that short */

_Static_assert(sizeof(pthread_mutex_t) <= LINE, "a mutex must fit its line");

static pthread_mutex_t *mutex_at(Region *r, long long i) {
    return (pthread_mutex_t *)(r->base + r->locks_at + i * LINE);
}

int lock_index_ok(Region *r, long long i) {
    if (r->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the arena is closed");
        return -1;
    }
    if (i < 0 || i >= r->nlocks) {
        PyErr_Format(PyExc_ValueError, "lock index %lld out of range (%zd locks)", i, r->nlocks);
        return -1;
    }
    return 0;
}

static int set_errno_error(const char *what, int rc) {
    PyErr_Format(PyExc_OSError, "%s: %s", what, strerror(rc));
    return -1;
}

int lock_init(Region *r, long long i) {
    if (lock_index_ok(r, i) < 0) return -1;
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (!rc) rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (!rc) rc = pthread_mutex_init(mutex_at(r, i), &a);
    pthread_mutexattr_destroy(&a);
    return rc ? set_errno_error("pthread_mutex_init", rc) : 0;
}

/* arena.py's AW_TAKEOVERS: takeovers from a dead holder of a lock at or above the index in
 * AW_STATE_LOCKS (locks guarding state a dead holder may leave torn), ever; byte offsets */
#define TAKEOVERS_BYTE (AW_TAKEOVERS * WORD)
#define STATE_LOCKS_BYTE (AW_STATE_LOCKS * WORD)

/* the first state lock (_W_STATE_LOCKS), or -1 with ValueError when the arena is too small to
 * hold the word */
static long long first_state_lock(Region *r) {
    if (region_span(r, STATE_LOCKS_BYTE, 8, 8) < 0) return -1;
    uint64_t v = atomic_load_explicit(word_at(r, STATE_LOCKS_BYTE), memory_order_seq_cst);
    return v > (uint64_t)r->nlocks ? r->nlocks : (long long)v;
}

/* Before region r lets its buffer go (module.c's region_let_go): every mutex of it that this
 * thread holds is given back. glibc links a held robust mutex into its thread's robust list
 * through the mutex itself; left there once the mapping is gone, the thread's next robust lock
 * writes through the dangling link (a crash) and its exit has the kernel read it. Other
 * processes still map the arena: a state lock given back this way is counted as taken over
 * (TAKEOVERS_BYTE), since what it guards may be torn, as when a holder dies. */
void locks_let_go(Region *r) {
    char *base = r->view.obj != NULL ? (char *)r->view.buf : NULL;
    if (base == NULL) return;
    uint32_t me = (uint32_t)syscall(SYS_gettid);
    long long first = r->nlocks;
    if (r->size >= STATE_LOCKS_BYTE + 8) {
        uint64_t v = atomic_load_explicit((aword *)(base + STATE_LOCKS_BYTE), memory_order_seq_cst);
        first = v > (uint64_t)r->nlocks ? r->nlocks : (long long)v;
    }
    for (Py_ssize_t i = 0; i < r->nlocks; i++) {
        pthread_mutex_t *m = (pthread_mutex_t *)(base + r->locks_at + i * LINE);
        /* the futex word: relaxed, only this thread stores its own tid there */
        if ((atomic_load_explicit((aword32 *)m, memory_order_relaxed) & FUTEX_TID_MASK) != me)
            continue;
        if (i >= first && r->size >= TAKEOVERS_BYTE + 8)
            atomic_fetch_add_explicit((aword *)(base + TAKEOVERS_BYTE), 1, memory_order_seq_cst);
        pthread_mutex_unlock(m);
    }
}

static int lock_result(pthread_mutex_t *m, int rc) {
    if (rc == 0) return 0;
    if (rc == EOWNERDEAD) {
        /* the holder died. Each ring frame it wrote or read is whole or absent (one commit store
         * each), but what the lock protects as a whole need not be: a channel send stores a
         * ring's tail, then the channel's count, and a holder killed between the two leaves them
         * disagreeing. The mutex is made usable again; lock_take counts the takeover of a state
         * lock (TAKEOVERS_BYTE) so that the runtime knows its state may be torn. */
        pthread_mutex_consistent(m);
        return 1;
    }
    if (rc == EDEADLK) {
        PyErr_SetString(PyExc_RuntimeError, "shared lock already held by this thread");
        return -1;
    }
    return set_errno_error("pthread_mutex_lock", rc);
}

/* pthread_mutex_lock in timed slices with the GIL released, the region held; between slices,
 * signal handlers run. The lock's result code, or -1 with an exception set (a handler raised,
 * or the region was released: the lock is not held then). */
static int lock_wait(Region *r, pthread_mutex_t *m) {
    int rc;
    region_hold(r);
    for (;;) {
        struct timespec ts;
        Py_BEGIN_ALLOW_THREADS
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
        clock_gettime(CLOCK_MONOTONIC, &ts);
#define TIMED_LOCK(m, ts) pthread_mutex_clocklock(m, CLOCK_MONOTONIC, ts)
#else
        clock_gettime(CLOCK_REALTIME, &ts);
#define TIMED_LOCK(m, ts) pthread_mutex_timedlock(m, ts)
#endif
        ts.tv_nsec += WAIT_SLICE_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        rc = TIMED_LOCK(m, &ts);
        Py_END_ALLOW_THREADS
        if (rc != ETIMEDOUT && rc != EINTR) break;
        if (r->base == NULL || PyErr_CheckSignals() < 0) {
            rc = -1;
            break;
        }
    }
    if (r->base == NULL && rc != -1) { /* released while asleep: give back what it got */
        if (rc == 0 || rc == EOWNERDEAD) {
            if (rc == EOWNERDEAD) pthread_mutex_consistent(m);
            pthread_mutex_unlock(m);
        }
        rc = -1;
    }
    if (rc == -1 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "the arena was closed while waiting for a lock");
    region_drop(r); /* after the last touch of m */
    return rc;
}

int lock_take(Region *r, long long i) {
    if (lock_index_ok(r, i) < 0) return -1;
    pthread_mutex_t *m = mutex_at(r, i);
    int rc = pthread_mutex_trylock(m);
    for (int k = 0; rc == EBUSY && k < SPINS; k++) {
        cpu_relax();
        rc = pthread_mutex_trylock(m);
    }
    if (rc == EBUSY && (rc = lock_wait(r, m)) == -1) return -1;
    int got = lock_result(m, rc);
    if (got == 1) {
        long long first = first_state_lock(r);
        if (first < 0) { /* no such word: the lock is held, the count cannot be kept */
            pthread_mutex_unlock(m);
            return -1;
        }
        if (i >= first) /* counted where the runtime can see it (arena.py's takeovers) */
            atomic_fetch_add_explicit(word_at(r, TAKEOVERS_BYTE), 1, memory_order_seq_cst);
    }
    return got;
}

/* A lock this thread holds can be given back for as long as the buffer is there: on an open
 * region, and on a released one whose buffer a holder still keeps (region_hold: a call that
 * took the lock and ran code that released the region, or a Lock object holding its mutex).
 * Refusing it there would leave the mutex held for ever by a thread that wants to let go. */
int lock_give(Region *r, long long i) {
    char *base = r->base != NULL ? r->base : r->view.obj != NULL ? (char *)r->view.buf : NULL;
    if (base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the arena is closed");
        return -1;
    }
    if (i < 0 || i >= r->nlocks) {
        PyErr_Format(PyExc_ValueError, "lock index %lld out of range (%zd locks)", i, r->nlocks);
        return -1;
    }
    int rc = pthread_mutex_unlock((pthread_mutex_t *)(base + r->locks_at + i * LINE));
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError, "release of a shared lock this thread does not hold");
        return -1;
    }
    return rc ? set_errno_error("pthread_mutex_unlock", rc) : 0;
}

static int index_arg(const char *fn, Region *r, PyObject *const *args, Py_ssize_t nargs,
                     long long *i) {
    if (arg_count(fn, nargs, 1, 1) < 0 || arg_ll(args[0], i) < 0) return -1;
    return lock_index_ok(r, *i);
}

RMETH(R_lock_init) {
    long long i;
    if (index_arg("lock_init", r, args, nargs, &i) < 0 || lock_init(r, i) < 0) return NULL;
    Py_RETURN_NONE;
}

RMETH(R_lock) {
    long long i;
    if (index_arg("lock", r, args, nargs, &i) < 0) return NULL;
    int got = lock_take(r, i);
    return got < 0 ? NULL : PyBool_FromLong(got);
}

RMETH(R_unlock) {
    long long i; /* lock_give checks the index, and allows a released region it can still reach */
    if (arg_count("unlock", nargs, 1, 1) < 0 || arg_ll(args[0], &i) < 0 || lock_give(r, i) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The process of thread `tid` (its Tgid in /proc), or tid itself when /proc cannot say (the
 * thread is gone: a snapshot either way). */
static long pid_of_thread(long tid) {
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%ld/status", tid);
    FILE *f = fopen(path, "r");
    long pid = tid;
    if (f == NULL) return pid;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Tgid: %ld", &pid) == 1) break;
    fclose(f);
    return pid;
}

RMETH(R_lock_owner) {
    long long i;
    if (index_arg("lock_owner", r, args, nargs, &i) < 0) return NULL;
    /* glibc keeps the holder's TID in the mutex's lock word */
    aword32 *w = (aword32 *)mutex_at(r, i);
    long tid = (long)(atomic_load_explicit(w, memory_order_relaxed) & FUTEX_TID_MASK);
    if (tid == 0) return PyLong_FromLong(0);
    long pid;
    Py_BEGIN_ALLOW_THREADS
    pid = pid_of_thread(tid);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(pid);
}

RMETH(R_locks_orphaned) {
    (void)args;
    if (arg_count("locks_orphaned", nargs, 0, 0) < 0) return NULL;
    long long first = first_state_lock(r);
    if (first < 0) return NULL;
    /* the kernel marks a robust mutex whose holder died FUTEX_OWNER_DIED until it is taken */
    for (Py_ssize_t i = 0; i < r->nlocks; i = i ? i + 1 : (first > 1 ? first : 1)) {
        /* lock 0 (the allocator's), then the state locks */
        aword32 *w = (aword32 *)mutex_at(r, i);
        if (atomic_load_explicit(w, memory_order_acquire) & FUTEX_OWNER_DIED) Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

/* ---- Lock: one lock of a region as an object (the ShmLock interface) */

/* While a Lock holds its mutex it holds its region (region_hold, once per acquire it has not
 * released yet): a release() of the region then keeps the buffer, so the Lock can still give
 * the mutex back (lock_give) instead of leaving it held for ever. region is NULL once the
 * collector cleared the object (tp_clear): every method then raises. */
typedef struct {
    PyObject_HEAD
    Region *region;
    long long index;
    long long holds; /* acquires through this object not yet released through it */
} LockObject;

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *region;
    long long i;
    static char *kwlist[] = {"region", "index", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!L:Lock", kwlist, &Region_Type, &region, &i) ||
        lock_index_ok((Region *)region, i) < 0)
        return NULL;
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->region = (Region *)Py_NewRef(region);
    self->index = i;
    self->holds = 0;
    return (PyObject *)self;
}

/* The object's region, or NULL with ValueError once the collector cleared it. */
static Region *lock_region(LockObject *self) {
    if (self->region == NULL) PyErr_SetString(PyExc_ValueError, "the lock was cleared");
    return self->region;
}

static int Lock_traverse(LockObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->region);
    return 0;
}

/* The holds it took are given back (a mutex it still holds stays held: nobody can release it
 * through this object any more), then the region. */
static int Lock_clear(LockObject *self) {
    Region *r = self->region;
    if (r != NULL) {
        for (; self->holds > 0; self->holds--) region_drop(r);
        Py_CLEAR(self->region);
    }
    return 0;
}

static void Lock_dealloc(LockObject *self) {
    PyObject_GC_UnTrack(self);
    Lock_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lock_acquire(LockObject *self, PyObject *unused) {
    (void)unused;
    Region *r = lock_region(self);
    if (r == NULL) return NULL;
    Py_INCREF(r); /* the wait releases the GIL: the region stays while it sleeps */
    int got = lock_take(r, self->index);
    if (got >= 0 && self->region == r) { /* held until this object gives the mutex back */
        region_hold(r);
        self->holds++;
    }
    Py_DECREF(r);
    return got < 0 ? NULL : PyBool_FromLong(got);
}

static PyObject *lock_release(LockObject *self) {
    Region *r = lock_region(self);
    if (r == NULL || lock_give(r, self->index) < 0) return NULL;
    if (self->holds > 0) { /* not when it was taken through another object */
        self->holds--;
        region_drop(r);
    }
    Py_RETURN_NONE;
}

static PyObject *Lock_release(LockObject *self, PyObject *unused) {
    (void)unused;
    return lock_release(self);
}

static PyObject *Lock_exit(LockObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)args;
    (void)nargs;
    return lock_release(self);
}

static PyObject *Lock_owner(LockObject *self, PyObject *unused) {
    (void)unused;
    Region *r = lock_region(self);
    if (r == NULL) return NULL;
    PyObject *i = PyLong_FromLongLong(self->index);
    if (i == NULL) return NULL;
    PyObject *res = R_lock_owner(r, &i, 1);
    Py_DECREF(i);
    return res;
}

static PyObject *Lock_get_index(LockObject *self, void *unused) {
    (void)unused;
    return PyLong_FromLongLong(self->index);
}

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction)Lock_acquire, METH_NOARGS,
     "Take the lock (any process). True if it was taken over from a dead holder."},
    {"release", (PyCFunction)Lock_release, METH_NOARGS, "Release the lock (the taking thread)."},
    {"owner", (PyCFunction)Lock_owner, METH_NOARGS, "The holder's process id, 0 if free."},
    {"__enter__", (PyCFunction)Lock_acquire, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Lock_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Lock_getset[] = {
    {"index", (getter)Lock_get_index, NULL, "The lock's index in its region.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Lock_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "csp_mp._shm._core.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Lock(region, index): a robust process-shared mutex in the arena.",
    .tp_new = Lock_new,
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_traverse = (traverseproc)Lock_traverse,
    .tp_clear = (inquiry)Lock_clear,
    .tp_methods = Lock_methods,
    .tp_getset = Lock_getset,
};
