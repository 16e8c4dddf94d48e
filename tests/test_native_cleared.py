"""Every type of the compiled core: never half-made, and safe after the cyclic GC clears it.

The collector calls a type's ``tp_clear`` on an object of a garbage cycle; code that still
reaches the object afterwards (a finalizer of another object of the cycle) must get an
exception from any method or getter, never a crash. The test calls each type's ``tp_clear``
itself (``PyType_GetSlot``) on a live object, then every public method with a few argument
shapes and every getter, in a child interpreter: a crash is a failed test naming the call.
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY_TP_CLEAR = 51  # Include/typeslots.h
HAVE_GC = 1 << 14  # Py_TPFLAGS_HAVE_GC
ARGUMENTS: tuple[tuple, ...] = ((), (0,), (0, 0), (0, 0, 0, 0), (b"x",), (None,))


def _types() -> dict[str, type]:
    core = native.core()
    return {n: t for n, t in vars(core).items() if isinstance(t, type)}


def _tp_clear(tp: type) -> Callable[[Any], int] | None:
    get = ctypes.pythonapi.PyType_GetSlot
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
    addr = get(tp, PY_TP_CLEAR)
    return None if not addr else ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(addr)


def test_every_type_takes_part_in_the_cyclic_gc() -> None:
    """Each type holds Python objects: each is a GC type with a tp_clear."""
    types = _types()
    assert {"Region", "Lock", "Bell", "ChanOps", "Peers", "TaskEncoder", "Sites", "Spawner",
            "Handles", "HandleRef", "GoEntry", "GRecord"} <= set(types)
    for name, tp in types.items():
        assert tp.__flags__ & HAVE_GC, name
        assert _tp_clear(tp) is not None, f"{name} has no tp_clear"


@pytest.mark.parametrize("name", sorted(_types()))
def test_no_half_made_object(name: str) -> None:
    """No constructor path gives an object whose fields tp_new did not fill."""
    tp = _types()[name]
    makers: list[Callable[[], Any]] = [lambda: tp.__new__(tp), lambda: tp()]
    if name != "HandleRef":
        makers.append(lambda: object.__new__(tp))
    else:
        makers.append(lambda: weakref.ref.__new__(tp, gc))
    for make in makers:
        with pytest.raises((TypeError, ValueError)):
            make()


# ---------------------------------------------------------------- the child: one of each, cleared

def _objects() -> dict[str, Any]:
    """A live object of every type, on one fresh arena (kept alive by the returned dict)."""
    from test_native_fuzz import World
    from test_native_fuzz_task import _Ch, _Handles, _Spawn

    w = World()
    spawn = _Spawn(w)
    handles = _Handles(w)
    ch = _Ch()
    handles.hs.register(ch, handles.st)
    ref = next(o for o in gc.get_referents(handles.hs) if isinstance(o, dict) and o
               and type(next(iter(o.values()))).__name__ == "HandleRef")
    objs = {"Region": w.r, "Lock": w.lock(), "Bell": w.cbell(), "ChanOps": w.ops(),
            "Peers": w.peers(), "TaskEncoder": spawn.enc, "Spawner": spawn.sp,
            "Sites": w.core_mod.Sites("/nonexistent/", lambda code, lasti: b"\xc0"),
            "Handles": handles.hs, "HandleRef": next(iter(ref.values())),
            "GoEntry": w.core_mod.GoEntry(lambda *a, **k: None)}
    from csp_mp._hub.g import record_class

    record_class()  # the records' starting values given (GRecord.start_with)
    objs["GRecord"] = w.core_mod.GRecord(1, print, (), {}, 0)
    objs["_keep"] = (w, spawn, handles, ch)
    return objs


def _calls(obj: Any) -> list[tuple[str, Callable[[], Any]]]:
    out: list[tuple[str, Callable[[], Any]]] = []
    for attr in sorted(dir(type(obj))):
        if attr.startswith("_"):
            continue
        kind = type(getattr(type(obj), attr)).__name__
        if kind == "getset_descriptor" or kind == "member_descriptor":
            out.append((attr, lambda a=attr: getattr(obj, a)))
        elif callable(getattr(type(obj), attr)):
            for args in ARGUMENTS:
                out.append((f"{attr}{args}", lambda a=attr, x=args: getattr(obj, a)(*x)))
    return out


def _child(name: str) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    objs = _objects()
    obj = objs[name]
    clear = _tp_clear(type(obj))
    assert clear is not None
    clear(obj)
    for label, call in _calls(obj):
        print("call", label, flush=True)
        try:
            call()
        except Exception as exc:  # any exception is an outcome; only a crash is not
            print("raised", label, type(exc).__name__, flush=True)
        else:
            print("returned", label, flush=True)
    print("done", flush=True)
    return 0


@pytest.mark.parametrize("name", sorted(_types()))
def test_a_cleared_object_raises_and_never_crashes(name: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT, CSP_MP_NATIVE="1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), name], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    calls = [ln.split(" ", 1)[1] for ln in out.stdout.splitlines() if ln.startswith("call ")]
    assert out.returncode == 0, (
        f"{name}: the child died (exit {out.returncode}) in {calls[-1:]}:\n{out.stderr[-2000:]}")
    assert out.stdout.splitlines()[-1:] == ["done"], out.stdout[-1000:]
    assert calls, f"{name}: no method or getter was called"


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
