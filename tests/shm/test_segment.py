"""Values too large for the arena travel in a shared-memory segment of their own (segment.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest

from csp_mp._shm import codec
from csp_mp._shm.arena import Arena
from csp_mp._shm.segment import too_large_for_arena

ARENA = 8 << 20  # a small arena: its heap's eighth is under 1 MiB


def _segments_open() -> list[str]:
    """The value segments this process holds an fd of."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "csp_mp-value" in target:
            out.append(target)
    return out


def _segments_mapped() -> int:
    with open("/proc/self/maps") as f:
        return sum("csp_mp-value" in line for line in f)


def _close(a: Arena) -> None:
    if a.sems is not None:  # the Python path's named semaphores
        a.sems.seal()
    a.close()


@pytest.fixture
def small() -> Iterator[Arena]:
    a = Arena.create(ARENA, 4)
    yield a
    _close(a)


@pytest.mark.parametrize("kind", ["ndarray", "bytes", "bytearray", "memoryview"])
def test_a_value_too_large_for_the_arena_travels_in_a_segment(kind: str, small: Arena) -> None:
    n = 3 << 20
    assert too_large_for_arena(n, small.heap_bytes)
    raw = np.arange(n // 8, dtype=np.int64)
    value = {"ndarray": raw, "bytes": raw.tobytes(), "bytearray": bytearray(raw.tobytes()),
             "memoryview": memoryview(raw.tobytes())}[kind]
    free = small.free_bytes()
    buf = codec.encode(value, small)
    assert len(buf) < 4096  # the value is not in the message
    assert small.free_bytes() > free - 4096  # nor in the arena: only a ticket is
    assert len(_segments_open()) == 1  # the sender's fd, until the receiver takes it
    got = codec.decode(buf, small)
    assert bytes(memoryview(got).cast("B")) == raw.tobytes()
    assert type(got) is type(value) or kind == "memoryview"
    small.segments.reap()
    # taken: the sender let it go; what is left is the receiver's mapping (and its fd)
    assert len(_segments_open()) == (kind != "bytes" and kind != "bytearray")
    del got
    gc.collect()
    assert _segments_mapped() == 0 and _segments_open() == []  # the last view dropped
    small.collect()
    assert small.free_bytes() == free


def test_a_full_arena_sends_what_it_cannot_hold_in_a_segment(small: Arena) -> None:
    held = []
    while True:  # fill the heap with blocks of 256 KiB (an arena value each)
        try:
            held.append(small.alloc(200 << 10))
        except MemoryError:
            break
    value = np.ones(300 << 10, dtype=np.uint8)
    assert not too_large_for_arena(value.nbytes, small.heap_bytes)
    got = codec.decode(codec.encode(value, small), small)
    assert np.array_equal(got, value)
    for off in held:
        small.decref(off)


def test_discard_lets_the_sender_free_the_segment(small: Arena) -> None:
    buf = codec.encode(np.zeros(2 << 20, dtype=np.uint8), small)
    assert len(_segments_open()) == 1
    codec.discard(buf, small)
    assert _segments_open() == []


def test_closing_the_arena_closes_segments_never_taken() -> None:
    a = Arena.create(ARENA, 4)
    codec.encode(np.zeros(2 << 20, dtype=np.uint8), a)
    codec.encode(np.zeros(3 << 20, dtype=np.uint8), a)
    assert len(_segments_open()) == 2
    _close(a)
    assert _segments_open() == []


def test_a_value_that_cannot_be_placed_names_its_size_and_the_knob() -> None:
    prog = textwrap.dedent("""
        import resource
        import numpy as np
        from csp_mp._shm import codec
        from csp_mp._shm.arena import Arena
        a = Arena.create(8 << 20, 4)
        if a.sems is not None:
            a.sems.seal()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        import os
        # no fd left for a segment (listdir counts the fd it reads through)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1, hard))
        try:
            codec.encode(np.zeros(5 << 20, dtype=np.uint8), a)
        except MemoryError as e:
            print(e)
    """)
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "cannot send a value of 5.0 MiB (5242880 bytes)" in r.stdout
    assert "CSP_MP_ARENA_MB=8" in r.stdout and "segment" in r.stdout
