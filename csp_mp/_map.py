"""``csp_mp.map``: a parallel map over an ``Executor``, chunked, with a progress display.

Layer: above ``_futures``.

The iterable is cut into chunks (about four per P when ``chunksize="auto"``, as mpire does; a
range, list or tuple is sliced, so a range chunk travels as three integers), every chunk is
submitted at once with every P-th one pinned to the caller's P, and the caller's waiting loop
runs those while the other Ps take the rest (``Executor._submit_all``).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures as cf
from typing import Any

from ._chan import Chan
from ._futures.executor import Executor, _chunks
from ._futures.task import _chunk_call1
from ._futures.wait import _on_hub
from ._run import ensure_runtime

_AUTO_CHUNKS_PER_P = 4  # as mpire: about four chunks per worker
_MAP_WINDOW_PER_P = 16  # chunks of one map started at once, per P (more wait for earlier ones)


def parallel_map(fn: Callable[..., Any], iterable: Iterable, *, chunksize: int | str = "auto",
                 ordered: bool = True, procs: int | None = None, progress: bool = False,
                 lazy: bool = False) -> list | Iterator:
    """Apply ``fn`` to every item of ``iterable`` in parallel; a list of the results (an
    iterator with ``lazy=True``), in input order unless ``ordered=False``."""
    if not callable(fn):
        raise TypeError(f"map() needs a callable, got {type(fn).__name__}")
    it = itertools.chain.from_iterable(_map_chunks(fn, iterable, chunksize, ordered, procs,
                                                   progress))
    return it if lazy else list(it)


def _map_chunks(fn: Callable[..., Any], iterable: Iterable, chunksize: int | str, ordered: bool,
                procs: int | None, progress: bool) -> Iterator[list]:
    """The result lists of ``fn`` over ``iterable``'s chunks, in order unless ``ordered=False``."""
    ex = Executor(procs=procs)
    b = ex._bind()
    nprocs = b.hub.nprocs
    b.limit = ex._max_workers = _MAP_WINDOW_PER_P * nprocs
    try:
        total: int | None = len(iterable)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if chunksize == "auto":
        size = max(1, -(-total // (nprocs * _AUTO_CHUNKS_PER_P))) if total else 64
    elif isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize >= 1:
        size = chunksize
    else:
        raise ValueError(f"chunksize must be 'auto' or an int >= 1, got {chunksize!r}")
    bar = _Progress(total) if progress else None
    if type(iterable) in _SLICEABLE and total is not None:
        seq: Any = iterable  # slices of a range are ranges: a chunk travels as three integers
        chunks: Iterable = (seq[i:i + size] for i in range(0, total, size))
    else:
        chunks = _chunks(iterable, size)
    # Every chunk is queued at once, every nprocs-th one pinned to this P: the waiting loop
    # below runs those itself while the other Ps take the rest.
    fs = ex._submit_all(_chunk_call1, ((fn, chunk) for chunk in chunks), pin_every=nprocs)
    ex.shutdown(wait=False)
    try:
        order = iter(fs) if ordered else _completion_order(fs)
        for fut in order:
            values = fut.result()
            if bar is not None:
                bar.add(len(values))
            yield values
    finally:
        for fut in fs:
            fut.cancel()
        if bar is not None:
            bar.close()


_SLICEABLE = frozenset({range, list, tuple})


def _completion_order(fs: list[cf.Future]) -> Iterator[cf.Future]:
    """``fs`` as they complete (a goroutine-friendly ``as_completed``)."""
    hub = ensure_runtime()
    ch: Chan = Chan(len(fs))

    def sender(i: int) -> Callable[[cf.Future], None]:
        def done(_f: cf.Future) -> None:
            _on_hub(hub, lambda: None if hub.stopping else ch.send(i))
        return done

    for i, fut in enumerate(fs):
        fut.add_done_callback(sender(i))
    for _ in fs:
        k = ch.recv()
        assert k is not None  # ch is never closed
        yield fs[k]


class _Progress:
    """A progress bar on a terminal (stderr), periodic lines otherwise."""

    WIDTH = 30
    LINE_EVERY = 5.0  # seconds between lines when stderr is not a terminal

    def __init__(self, total: int | None, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if self.tty and (now - self.last >= 0.1 or finished):
            self.last = now
            self.stream.write("\r" + self._text(now))
            self.stream.flush()
        elif not self.tty and (now - self.last >= self.LINE_EVERY or finished):
            self.last = now
            self.stream.write(self._text(now) + "\n")
            self.stream.flush()

    def _text(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        if self.total:
            frac = min(1.0, self.done / self.total)
            fill = int(frac * self.WIDTH)
            return (f"csp_mp.map [{'#' * fill}{'.' * (self.WIDTH - fill)}] {self.done}/"
                    f"{self.total} ({frac:.0%}, {rate:.0f} items/s)")
        return f"csp_mp.map {self.done} items ({rate:.0f} items/s)"

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


__all__ = ["parallel_map"]
