"""Every SPEC name is exported once, from its public home, with ``__module__`` set to that home.

Pickling finds classes and functions by ``__module__`` and qualified name, so each must name the
public module that exports it; re-exports must be the very same object.
"""

from __future__ import annotations

import importlib
import pickle

import pytest

import csp_mp

# name -> public home, as SPEC.md lists them
HOMES: dict[str, str] = {
    **{n: "csp_mp" for n in (
        "run", "go", "go_local", "blocking", "patch_blocking", "shutdown", "Chan", "select",
        "Panic", "DeadlockError", "ProcessLost", "ClosedChannelError", "MigrationWarning")},
    **{n: "csp_mp.time" for n in ("sleep", "after", "tick", "Timer", "Ticker", "after_func")},
    **{n: "csp_mp.sync" for n in ("WaitGroup", "Mutex", "RWMutex", "Once", "Cond")},
    **{f"atomic.{n}": "csp_mp.atomic" for n in ("Int64", "Bool")},
    **{f"errgroup.{n}": "csp_mp.errgroup" for n in ("Group", "with_context")},
    **{f"context.{n}": "csp_mp.context" for n in (
        "background", "todo", "with_cancel", "with_timeout", "with_deadline", "with_value",
        "Canceled", "DeadlineExceeded")},
    **{f"runtime.{n}": "csp_mp.runtime" for n in (
        "gomaxprocs", "num_cpu", "num_goroutine", "gosched", "goid", "current_p", "stack",
        "metrics")},
    **{f"testing.{n}": "csp_mp.testing" for n in ("fake_time", "wait_all_blocked", "ignore_leaks")},
    **{f"trace.{n}": "csp_mp.trace" for n in ("start", "stop", "tracing")},
}
# re-exported from csp_mp as well as from their home (SPEC: sync and time live in their modules)
REEXPORTED = {"sleep", "after", "tick", "Timer", "Ticker", "after_func",
              "WaitGroup", "Mutex", "RWMutex", "Once", "Cond"}
@pytest.mark.parametrize(("name", "home"), sorted(HOMES.items()), ids=sorted(HOMES))
def test_exported_from_its_home_with_module_set(name: str, home: str) -> None:
    short = name.rsplit(".", 1)[-1]
    mod = importlib.import_module(home)
    obj = getattr(mod, short)
    assert short in mod.__all__
    assert obj.__module__ == home, f"{home}.{short}.__module__ is {obj.__module__!r}"
    if isinstance(obj, type) or callable(obj):
        assert pickle.loads(pickle.dumps(obj)) is obj
    if short in REEXPORTED:
        assert getattr(csp_mp, short) is obj
    elif home != "csp_mp":
        assert short not in csp_mp.__all__, f"{short} is exported from csp_mp and {home}"


@pytest.mark.parametrize("name", ["default", "nilchan"])
def test_singletons_are_exported_and_pickle_to_themselves(name: str) -> None:
    obj = getattr(csp_mp, name)
    assert name in csp_mp.__all__
    assert pickle.loads(pickle.dumps(obj)) is obj


def test_warnings_and_errors_subclass_the_nearest_builtin() -> None:
    assert issubclass(csp_mp.MigrationWarning, RuntimeWarning)
    for exc in (csp_mp.Panic, csp_mp.DeadlockError, csp_mp.ProcessLost,
                csp_mp.ClosedChannelError):
        assert issubclass(exc, RuntimeError)
    assert issubclass(csp_mp.context.Canceled, Exception)
    assert issubclass(csp_mp.context.DeadlineExceeded, Exception)


def test_package_modules_are_reachable() -> None:
    for sub in ("atomic", "context", "errgroup", "runtime", "sync", "time"):
        assert getattr(csp_mp, sub) is importlib.import_module(f"csp_mp.{sub}")


def test_every_public_name_is_defined_once() -> None:
    """No object is exported under two public names or from two homes but the re-exports."""
    seen: dict[int, str] = {}
    for mod_name in ("csp_mp", "csp_mp.time", "csp_mp.sync", "csp_mp.atomic", "csp_mp.context",
                     "csp_mp.errgroup", "csp_mp.runtime", "csp_mp.testing"):
        mod = importlib.import_module(mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type(csp_mp)):
                continue
            where = f"{mod_name}.{name}"
            if id(obj) in seen and name not in REEXPORTED:
                raise AssertionError(f"{where} is also exported as {seen[id(obj)]}")
            seen.setdefault(id(obj), where)
