"""``csp_mp.shared_array``: Go's shared slice across Ps, its lifetime, and the MigrationWarning for
a plain list, dict or array argument that a goroutine on another P changed (a copy).

Each runs on both paths (``make test`` and ``make test-python``).
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from typing import Any

import mp_helpers as H
import pytest
from mp_helpers import run

import csp_mp
from csp_mp import Chan, MigrationWarning, WaitGroup, go, runtime

np = pytest.importorskip("numpy")

ROWS = 64


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _fill_row(i: int, rows: Any, wg: WaitGroup, ps: Any) -> None:
    try:
        _burn(0.002)  # long enough that idle Ps steal some of the fan-out
        rows[i] = i + 0.5
        ps[i] = runtime.current_p()
    finally:
        wg.done()


def _fan_out(procs: int) -> tuple[list[float], set[int]]:
    def main() -> tuple[list[float], set[int]]:
        rows = csp_mp.shared_array(ROWS)
        ps = csp_mp.shared_array(ROWS, dtype=np.int64)
        wg = WaitGroup()
        wg.add(ROWS)
        for i in range(ROWS):
            go(_fill_row, i, rows, wg, ps)
        wg.wait()
        out = rows.tolist(), set(ps.tolist())
        del rows, ps  # the frames P0 took back named them too: those names were consumed
        H.wait_until(lambda: _live_arrays() == 0, "both arrays to be freed")
        return out

    return run(main, procs)


@pytest.mark.parametrize("procs", [1, 2])
def test_goroutines_on_every_p_fill_every_row_of_a_shared_array(procs: int) -> None:
    """The issue's program: 64 goroutines each write their row; none stays 0.0."""
    for _attempt in range(5):  # until some rows were written on another P (a steal is likely)
        rows, ps = _fan_out(procs)
        assert rows == [i + 0.5 for i in range(ROWS)]
        if procs == 1 or ps == {0, 1}:
            break
    else:
        pytest.fail(f"no row was written on P1 in 5 runs: {ps}")


def _write_slice(part: Any, base: float, done: Chan) -> None:
    part[:] = np.arange(len(part)) + base
    done.send(runtime.current_p())


def _write_back(reqs: Chan, done: Chan) -> None:
    for arr in reqs:
        arr[0, 1] = 7
        done.send(arr)  # the same memory, back to the sender


def test_a_slice_or_an_array_sent_on_a_channel_is_shared_not_copied() -> None:
    """A view (Go's ``s[a:b]``) passed to a goroutine on another P, and a 2-D array sent over a
    channel and back, name the same memory: writes are seen on both sides."""

    def main() -> tuple[list[int], int, bool, str]:
        a = csp_mp.shared_array(16, dtype=np.int32)
        done = Chan(1)
        H.go_on(1, _write_slice, a[4:8], 100, done)
        p = done.recv()
        grid = csp_mp.shared_array((3, 4), dtype="u2")
        reqs, back = Chan(1), Chan(1)
        H.go_on(1, _write_back, reqs, back)
        reqs.send(grid)
        got = back.recv()
        reqs.close()
        return (a.tolist(), p, bool(np.shares_memory(got, grid)) and grid[0, 1] == 7,
                type(got).__name__)

    values, p, same, kind = run(main, 2)
    assert p == 1
    assert values == [0] * 4 + [100, 101, 102, 103] + [0] * 8
    assert same
    assert kind == "SharedArray"


def _hold(arr: Any, drop: Chan, done: Chan) -> None:
    done.send(float(arr.sum()))
    drop.recv()  # holds arr until told to drop it


def _live_arrays() -> int:
    return int(runtime.metrics()["shared_objects"].get("array", 0))


def _fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return {f for f in out if "memfd:" in f}


def test_a_shared_array_is_freed_once_no_p_holds_it_and_nothing_is_left_after_the_run() -> None:
    """The block stays while any P holds an array over it, goes once none does (the arena's
    bytes in use come back), and the run leaves no memfd open and nothing in /dev/shm."""
    before_fds = _fds()

    def main() -> tuple[int, int, int, int]:
        in_use = runtime.metrics()["arena_bytes_in_use"]
        big = csp_mp.shared_array(1 << 20, dtype=np.uint8)  # 1 MiB: visible in the arena
        big[:] = 1
        drop, done = Chan(), Chan(1)
        H.go_on(1, _hold, big[::2], drop, done)
        total = int(done.recv())
        del big  # P1's view keeps the block
        held = _live_arrays()
        drop.send(None)
        H.wait_until(lambda: _live_arrays() == 0, "the array's block to be freed")
        return total, held, runtime.metrics()["arena_bytes_in_use"] - in_use, _live_arrays()

    total, held, grown, live = run(main, 2)
    assert total == 1 << 19
    assert held == 1
    assert grown < 1 << 20  # the array's block went back (the probes' channels may remain)
    assert live == 0
    assert _fds() == before_fds


def _survivor() -> Any:
    arr = csp_mp.shared_array(8)
    arr[:] = 3
    return arr


def test_an_array_outliving_its_runtime_keeps_its_values_but_cannot_be_shared_again() -> None:
    arr = run(_survivor, 2)
    assert arr.tolist() == [3.0] * 8  # the memory stays mapped while the array lives

    def main() -> None:
        go(_write_slice, arr, 0, Chan(1))

    with pytest.raises(csp_mp.Panic) as info:
        run(main, 2)
    assert "runtime that has ended" in str(info.value.__cause__)


def test_an_array_made_outside_a_runtime_of_several_ps_works_here_and_refuses_to_travel() -> None:
    arr = csp_mp.shared_array((2, 3), dtype=bool)
    arr[1, 2] = True
    assert arr.sum() == 1 and arr.dtype == np.bool_

    def local() -> list[float]:
        ps = csp_mp.shared_array(4)
        wg = WaitGroup()
        wg.add(4)
        for i in range(4):
            go(_fill_row, i, ps, wg, csp_mp.shared_array(4))
        wg.wait()
        return ps.tolist()

    assert run(local, 1) == [0.5, 1.5, 2.5, 3.5]

    def main() -> None:
        go(_write_slice, arr, 0, Chan(1))

    with pytest.raises(csp_mp.Panic) as info:
        run(main, 2)
    assert "made outside a runtime of several Ps" in str(info.value.__cause__)
    with pytest.raises(TypeError, match="made outside a runtime of several Ps"):
        pickle.dumps(csp_mp.shared_array(1))


def test_an_array_computed_from_a_shared_one_travels_as_a_plain_copy() -> None:
    def main() -> tuple[str, bool]:
        a = csp_mp.shared_array(4)
        ch = Chan(1)
        H.go_on(1, _echo, ch)
        ch.send(a + 1)
        got = ch.recv()
        return type(got).__name__, bool(np.shares_memory(got, a))

    assert run(main, 2) == ("ndarray", False)


def _echo(ch: Chan) -> None:
    v = ch.recv()
    ch.send(v)


@pytest.mark.parametrize(("shape", "dtype", "error", "words"), [
    (4, object, TypeError, "Python objects"),
    (4, [("a", "i4"), ("b", "O")], TypeError, "Python objects"),
    (4, "no-such-dtype", TypeError, "not a NumPy dtype"),
    (4, str, TypeError, "no size"),
    ((2, -1), float, ValueError, "negative dimension"),
    (2.5, float, TypeError, "int or a tuple of ints"),
    ((True, 2), float, TypeError, "not bool"),
])
def test_a_bad_shape_or_dtype_names_the_problem(shape: Any, dtype: Any, error: type,
                                                words: str) -> None:
    with pytest.raises(error, match=words):
        csp_mp.shared_array(shape, dtype)


def test_an_array_larger_than_the_arena_names_the_setting() -> None:
    def main() -> None:
        csp_mp.shared_array(1 << 40, dtype=np.uint8)

    with pytest.raises(csp_mp.Panic) as info:
        run(main, 2)
    assert isinstance(info.value.__cause__, MemoryError)
    assert "CSP_MP_ARENA_MB" in str(info.value.__cause__)


# ---------------------------------------------------------------- MigrationWarning for arguments


def _append(out: list, done: Chan) -> None:
    out.append(1)
    done.send(runtime.current_p())


def _set_key(out: dict, done: Chan) -> None:
    out["k"] = runtime.current_p()
    done.send(runtime.current_p())


def _write_array(out: Any, done: Chan) -> None:
    out[0] = 5
    done.send(runtime.current_p())


def _read_only(out: Any, done: Chan) -> None:
    done.send(runtime.current_p() + 0 * len(out))


def _until_one_ran_on_p1(fn: Any, make: Any) -> None:
    """From main: start ``fn(make(), done)`` goroutines until one of them ran on P1."""
    done = Chan(16)
    deadline = time.monotonic() + H.DEADLINE
    while time.monotonic() < deadline:
        for _ in range(8):
            go(fn, make(), done)
        if 1 in [done.recv() for _ in range(8)]:
            return
    raise AssertionError("no goroutine ran on P1")


def _warnings_of(fn: Any, make: Any) -> list[str]:
    def main() -> None:
        _until_one_ran_on_p1(fn, make)
        deadline = time.monotonic() + 0.5  # P1 reports once the goroutine has returned
        while not caught and time.monotonic() < deadline:
            csp_mp.sleep(0.01)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main, 2)
    return [str(w.message) for w in caught if issubclass(w.category, MigrationWarning)]


@pytest.mark.parametrize(("fn", "make", "kind"), [
    (_append, lambda: [0.0] * 4, "a list"),
    (_set_key, dict, "a dict"),
    (_write_array, lambda: np.zeros(4), "a NumPy array"),
])
def test_a_plain_argument_changed_on_another_p_warns_once(fn: Any, make: Any,
                                                          kind: str) -> None:
    got = _warnings_of(fn, make)
    assert len(got) == 1, got
    assert f"changed its argument 'out' ({kind}) on P1" in got[0]
    assert "shared_array" in got[0] and "channel" in got[0]


@pytest.mark.parametrize("make", [lambda: [1, 2], dict, lambda: np.ones(3),
                                  lambda: csp_mp.shared_array(3)],
                         ids=["list", "dict", "ndarray", "shared_array"])
def test_an_unchanged_argument_gives_no_warning(make: Any) -> None:
    assert _warnings_of(_read_only, make) == []


def test_a_shared_array_written_on_another_p_gives_no_warning() -> None:
    assert _warnings_of(_write_array, lambda: csp_mp.shared_array(3)) == []
