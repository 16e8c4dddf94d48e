"""Layer 1: bytes and words in shared memory. Knows nothing of goroutines or greenlets.

Modules and what they offer:

  atomics   ``Words(buf)``: ``load(i)``, ``store(i, v)`` of 8-aligned 64-bit words; ``TSO``.
            The only module that touches shared words; everything else goes through it.
  locks     ``SemRegistry`` (named semaphores, ``seal()`` removes the names), ``Sem``,
            ``ShmLock`` (a mutex taken over from a holder killed while holding it),
            ``LockSet`` (``lock_for(key)``).
  arena     ``Arena.create(size, nlocks)``: a memfd region with a buddy allocator in it:
            ``alloc``/``free``/``incref``/``decref``, ``lease`` (a view freed when it dies),
            ``seal``, ``wait_attached``; picklable into a forkserver/spawn child until sealed.
  ring      ``Ring`` (MPMC, locked) and ``SpscRing`` (lock-free, x86-64) of framed messages:
            ``try_put``/``try_get``/``put_many``/``get_many``; ``make_ring``/``attach_ring``.
            Built on ``ring_frames`` (the block layout, one frame), ``ring_batch`` (runs of
            frames under one commit) and ``ring_native`` (the compiled core's operations).
  doorbell  ``Doorbell.create(arena)``: ``ring()`` from any process or thread,
            ``wait(timeout)`` in the owning P.
  segment   ``Segments`` of an arena: a value too large for it, in a memfd of its own
            (``put`` by the sender, ``take`` by the receiver, freed with the last view).
  codec     ``encode(value, arena)``/``decode(buf, arena)``/``discard(buf, arena)``,
            ``TypedCodec(T, arena)``; with ``cloud`` (cloudpickle as csp_mp uses it) and
            ``typecheck`` (does a value match a msgspec type all the way down).
  native    whether the compiled core ``_core`` (sources in ``c/``) is built and in use.

Invariants of the layer:
  - nothing named outlives start-up: the arena is a memfd; semaphores are named only until the
    creator calls ``arena.seal()`` after every process has attached (``arena.wait_attached``,
    which counts the arena's unpickling: a child's semaphores come before the arena in its
    arguments);
    nothing registers with ``multiprocessing``'s resource tracker.
  - shared words are 8-aligned and published with one 8-byte store (never ``struct``);
    producer-owned and consumer-owned words sit on different 64-byte lines.
  - every published structure commits with a single word store after its payload, so a process
    SIGKILLed at any point leaves it consistent (a half-written message is never delivered).
  - imports, from outside this package: ``csp_mp._errors`` and ``csp_mp._tb`` (the layer below;
    see the import-linter contract), msgspec and cloudpickle. This ``__init__`` only
    re-exports, each name on first use (a one-P program imports ``native`` and ``layout``
    only): no module of the package uses a name it defines.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from csp_mp._shm.arena import Arena as Arena
    from csp_mp._shm.arena import ArenaPoisoned as ArenaPoisoned
    from csp_mp._shm.atomics import TSO as TSO
    from csp_mp._shm.atomics import Words as Words
    from csp_mp._shm.codec import OOB_MIN as OOB_MIN
    from csp_mp._shm.codec import TypedCodec as TypedCodec
    from csp_mp._shm.codec import decode as decode
    from csp_mp._shm.codec import discard as discard
    from csp_mp._shm.codec import encode as encode
    from csp_mp._shm.doorbell import Doorbell as Doorbell
    from csp_mp._shm.locks import LockSet as LockSet
    from csp_mp._shm.locks import SemRegistry as SemRegistry
    from csp_mp._shm.locks import ShmLock as ShmLock
    from csp_mp._shm.ring import Ring as Ring
    from csp_mp._shm.ring import SpscRing as SpscRing
    from csp_mp._shm.ring import attach_ring as attach_ring
    from csp_mp._shm.ring import make_ring as make_ring

# name -> the module defining it: each loads on first use, so importing a module of this
# package (native, layout) does not import the arena, the rings and the codec
_HOMES = MappingProxyType({
    "Arena": "arena",
    "ArenaPoisoned": "arena",
    "TSO": "atomics",
    "Words": "atomics",
    "OOB_MIN": "codec",
    "TypedCodec": "codec",
    "decode": "codec",
    "discard": "codec",
    "encode": "codec",
    "Doorbell": "doorbell",
    "LockSet": "locks",
    "SemRegistry": "locks",
    "ShmLock": "locks",
    "Ring": "ring",
    "SpscRing": "ring",
    "attach_ring": "ring",
    "make_ring": "ring",
})

__all__ = [
    "OOB_MIN",
    "TSO",
    "Arena",
    "ArenaPoisoned",
    "Doorbell",
    "LockSet",
    "Ring",
    "SemRegistry",
    "ShmLock",
    "SpscRing",
    "TypedCodec",
    "Words",
    "attach_ring",
    "decode",
    "discard",
    "encode",
    "make_ring",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value
