"""``csp_mp.go`` on the compiled core: task.c's ``GoEntry``, which frames the common call (the
callable last given, no keyword arguments) through the hub's Spawner without a Python frame of
its own, and hands every other call to the Python ``go()`` (``_run.py``). It must look and act as
that function does, on both runtime paths, and aim only at the Spawner of the hub running here.
"""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from typing import Any

import pytest

import csp_mp
from csp_mp import Chan, go, runtime
from csp_mp._hub import hooks
from csp_mp._proc import proc
from csp_mp._run import _compiled_go
from csp_mp._shm import native

compiled = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")
PATHS = [pytest.param("1", id="compiled", marks=compiled), pytest.param("0", id="python")]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CSP_MP_NATIVE", request.param)
    return str(request.param)


@compiled
def test_the_compiled_go_has_the_face_of_the_python_function() -> None:
    python_go = go.__wrapped__  # type: ignore[attr-defined]
    assert inspect.isfunction(python_go) and python_go is not go
    assert repr(go) == "<compiled function go>"
    assert (go.__name__, go.__qualname__, go.__module__) == ("go", "go", "csp_mp")
    assert go.__doc__ == python_go.__doc__ and "new goroutine" in go.__doc__
    assert inspect.signature(go) == inspect.signature(python_go)
    assert pickle.loads(pickle.dumps(go)) is go  # by reference, as a function pickles
    assert proc.go_entry is go


def test_without_the_compiled_core_go_is_the_python_function(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    def python_go(fn: Any, *args: Any) -> None:
        pass

    saved = proc.go_entry
    monkeypatch.setattr(native, "built", lambda: False)
    assert _compiled_go(python_go) is python_go
    assert proc.go_entry is saved


def _target_name() -> str:
    target = proc.go_entry.target if proc.go_entry is not None else None
    return type(target).__name__


def _aims_main() -> list[str]:
    seen = [_target_name()]
    inst = hooks.Instrument()
    hooks.install(proc.hub, inst)  # the hub's go is the instrumented one: nothing to aim at
    seen.append(_target_name())
    hooks.uninstall(proc.hub, inst)
    seen.append(_target_name())
    return seen


@pytest.mark.parametrize("procs", [1, 2])
def test_the_entry_aims_at_the_running_hubs_spawner_only(path: str, procs: int) -> None:
    seen = csp_mp.run(_aims_main, procs=procs)
    aimed = "Spawner" if path == "1" and procs > 1 else "NoneType"
    assert seen == [aimed, "NoneType", aimed]
    assert _target_name() == "NoneType"  # the runtime stopped: nothing of it is kept


class _Odd:
    """A callable object: not a function, so never the fast path's."""

    def __call__(self, i: int, out: Chan) -> None:
        out.send(("odd", i))


def _put(i: int, out: Chan, tag: str = "") -> None:
    out.send((tag or "put", i, runtime.current_p() >= 0))


def _calls_main() -> list:
    out: Chan = Chan(64)
    n = 0
    for i in range(4):  # the same callable again and again: the fast path after the first
        go(_put, i, out)
        n += 1
    go(_put, 4, out, tag="kw")  # keyword arguments: the Python go()
    go(_put, [5], out)  # an argument the codec carries: the Python go()
    go(_Odd(), 6, out)
    go(_put, 7, out)  # the callable last given changed: the Python go() first, then fast
    go(_put, 8, out)
    n += 5
    errors = []
    for bad in ((), (42,), (None, 1)):
        try:
            go(*bad)
        except TypeError as exc:
            errors.append(str(exc).split(",")[0])
    got = sorted(repr(out.recv()) for _ in range(n))
    return [got, errors]


@pytest.mark.parametrize("procs", [1, 2])
def test_every_kind_of_call_behaves_as_the_python_go(path: str, procs: int) -> None:
    got, errors = csp_mp.run(_calls_main, procs=procs)
    want = sorted(repr(v) for v in [("put", 0, True), ("put", 1, True), ("put", 2, True),
                                    ("put", 3, True), ("kw", 4, True), ("put", [5], True),
                                    ("odd", 6), ("put", 7, True), ("put", 8, True)])
    assert got == want
    assert errors[0].startswith("go() missing 1 required positional argument")
    assert errors[1:] == ["go() needs a callable", "go() needs a callable"]


def _chain(n: int, out: Chan) -> None:
    if n:
        go(_chain, n - 1, out)  # the fast path from a goroutine on whichever P runs it
    out.send(n)


def _chain_main() -> list[int]:
    out: Chan = Chan(256)
    go(_chain, 199, out)
    return sorted(out.recv() for _ in range(200))


def test_goroutines_started_from_any_p_through_the_entry_all_run(path: str) -> None:
    assert csp_mp.run(_chain_main, procs=2) == list(range(200))


def test_go_outside_a_runtime_starts_the_implicit_one() -> None:
    code = ("import csp_mp\n"
            "out = csp_mp.Chan(2)\n"
            "csp_mp.go(out.send, 1)\n"
            "csp_mp.go(out.send, 2)\n"
            "print(sorted([out.recv(), out.recv()]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[1, 2]"



def _python_go_calls_main() -> int:
    from csp_mp import _run

    code = go.__wrapped__.__code__ if hasattr(go, "__wrapped__") else _run.go.__code__
    calls = 0

    def prof(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += event == "call" and frame.f_code is code

    out: Chan = Chan(8)
    sys.setprofile(prof)
    try:
        for i in range(8):
            go(_put, i, out)
    finally:
        sys.setprofile(None)
    for _ in range(8):
        out.recv()
    return calls


@pytest.mark.parametrize("procs", [1, 2])
def test_only_the_first_call_of_a_callable_runs_the_python_go(path: str, procs: int) -> None:
    """On the compiled core with several Ps the entry frames the repeated call itself; every
    other runtime goes through the Python go() each time."""
    calls = csp_mp.run(_python_go_calls_main, procs=procs)
    assert calls == (1 if path == "1" and procs > 1 else 8)


def _busy_until(flag: Any) -> None:
    import time

    end = time.monotonic() + 20
    while not flag.load() and time.monotonic() < end:
        pass


def _queue_here(n: int) -> tuple[Any, Chan, list[tuple]]:
    """``n`` goroutines go()'d while P1 is kept busy: the flag that frees P1, their results'
    channel, and the entries queued here for them."""
    from mp_helpers import go_on

    from csp_mp import atomic

    flag = atomic.Int64(0)
    go_on(1, _busy_until, flag)  # P1 never idles: the goroutines stay queued here
    out: Chan = Chan(n)
    for i in range(n):
        go(_put, i, out)
    b = proc.broker
    return flag, out, [e for e in (*b.runq.pending, *b.runq.unq) if len(e) == 5]


def _queued_entries_main() -> tuple[int, int, list[int]]:
    import gc

    flag, out, entries = _queue_here(200)
    tracked = sum(gc.is_tracked(e) or gc.is_tracked(e[2]) for e in entries)
    gc.collect()  # what only the entries hold (the channel among the arguments) stays
    flag.store(1)
    got = sorted(out.recv()[1] for _ in range(200))
    return tracked, len(entries), got


@compiled
def test_queued_goroutines_are_not_walked_by_the_cyclic_collector(monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """The compiled go()'s queue entries and argument tuples are in no cycle, and untracked:
    a collection during a large fan-out does not walk them, and loses nothing they hold."""
    monkeypatch.setenv("CSP_MP_NATIVE", "1")
    tracked, n, got = csp_mp.run(_queued_entries_main, procs=2)
    assert n >= 100  # (a few may have been taken before the look)
    assert tracked <= 1  # the first call of a callable is the Python go()'s
    assert got == list(range(200))


def _entries_main() -> tuple[int, int, bool, set, int, list[int]]:
    flag, out, entries = _queue_here(50)
    me = proc.hub.current.id
    kwargs = {id(e[3]) for e in entries[1:]}  # (the first is the Python go()'s)
    empty = all(e[3] == {} for e in entries)
    creators = {e[4][1] for e in entries}
    flag.store(1)
    got = sorted(out.recv()[1] for _ in range(50))
    return len(entries), len(kwargs), empty, creators, me, got


@compiled
def test_queued_entries_name_their_creator_and_share_one_empty_kwargs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry the compiled go() queues names the goroutine that called go() (read from its
    record) and holds the one empty kwargs dict of the entry; every goroutine runs."""
    monkeypatch.setenv("CSP_MP_NATIVE", "1")
    n, kwargs, empty, creators, me, got = csp_mp.run(_entries_main, procs=2)
    assert n >= 25 and kwargs == 1 and empty
    assert creators == {me}
    assert got == list(range(50))


@compiled
def test_the_spawner_takes_a_record_an_id_or_none_from_its_creator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """creator(hub) may give the running goroutine's record (its id is read from it), its id,
    or None (no goroutine runs: 0); anything else is a TypeError naming what it needs."""
    from test_native_fuzz import World
    from test_native_fuzz_task import _Spawn

    from csp_mp._hub.g import record_class

    monkeypatch.setenv("CSP_MP_NATIVE", "1")
    g = record_class()(41, print, (), {}, 0)
    w = World()
    for given, want in ((g, 41), (7, 7), (None, 0)):
        sp = _Spawn(w, creator=lambda hub, v=given: v)
        sp.go(1)
        assert (sp.entries or sp.published)[-1][4][1] == want
    sp = _Spawn(w, creator=lambda hub: "seven")
    with pytest.raises(TypeError, match="a goroutine record, an id or None"):
        sp.go(1)
    assert not sp.entries and not sp.published  # nothing queued
