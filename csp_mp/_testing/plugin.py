"""The pytest plugin, loaded through the ``pytest11`` entry point when csp_mp is installed.

- ``@pytest.mark.csp_mp(procs=1, fake_time=False)`` runs the test function as the main
  goroutine of ``csp_mp.run(..., procs=procs)``; the ``csp_procs`` fixture gives ``procs``
  (parametrize ``csp_procs`` to run a test on several counts of Ps);
- after such a test, goroutines other than main still alive, P processes or ``/dev/shm``
  entries left fail it with the leaked goroutines' ``runtime.stack()`` entries (Go's goleak);
  so do shared objects it made that still hold arena blocks once no other goroutine is alive;
- ``--csp-mp-leaks`` applies the same check to every test that used the implicit runtime,
  which is then stopped so that the next test starts clean.

A test without the marker, run without the option, is left exactly as it was.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import pytest

from .. import _tb
from .._errors import GoroutineExit
from .._proc import proc
from .._run import run, shutdown
from .._runtime import num_goroutine
from . import leaks as L
from .faketime import _ONE_P, fake_time

MARK = "csp_mp"
_OPTIONS = {"procs", "fake_time"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("csp_mp")
    group.addoption("--csp-mp-leaks", action="store_true", default=False,
                    help="fail every test that leaves goroutines of the implicit csp_mp runtime "
                         "running (and stop that runtime after each test)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "csp_mp(procs=1, fake_time=False): run the test as the main goroutine of "
                   "csp_mp.run(..., procs=procs), then fail it on leaked goroutines")


def _options(item: pytest.Item) -> tuple[int, bool]:
    marker = item.get_closest_marker(MARK)
    kw = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and (marker.args or set(kw) - _OPTIONS):
        pytest.fail(f"@pytest.mark.csp_mp takes only the keywords {sorted(_OPTIONS)}, "
                    f"got {marker.args!r} {sorted(kw)}", pytrace=False)
    callspec = getattr(item, "callspec", None)
    procs = kw.get("procs", 1)
    if callspec is not None and "csp_procs" in callspec.params:
        procs = callspec.params["csp_procs"]
    if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
        pytest.fail(f"@pytest.mark.csp_mp: procs must be an int >= 1, got {procs!r}",
                    pytrace=False)
    fake = bool(kw.get("fake_time", False))
    if fake and procs > 1:
        pytest.fail(f"@pytest.mark.csp_mp(fake_time=True, procs={procs}): {_ONE_P}",
                    pytrace=False)
    return procs, fake


@pytest.fixture
def csp_procs(request: pytest.FixtureRequest) -> int:
    """The number of Ps the test runs on (the ``procs`` of its ``csp_mp`` marker)."""
    return _options(request.node)[0]


def _main(fn: Any, kwargs: dict[str, Any], fake: bool) -> tuple[Any, Any]:
    """The main goroutine of a marked test: the test body, then the leak checks of goroutines
    and, once no other goroutine is alive, of shared objects."""
    __tracebackhide__ = not _tb.debug()
    before = L.live_objects()
    try:
        if fake:
            with fake_time():
                fn(**kwargs)
        else:
            fn(**kwargs)
    except GoroutineExit:
        raise
    except BaseException as exc:  # re-raised by the caller, outside the runtime
        return exc, None
    del kwargs
    leaked, unseen = L.leaked_goroutines()
    objects = L.objects_left(before) if num_goroutine() == 1 else {}
    return None, (leaked, unseen, objects)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker(MARK) is None:
        return None
    __tracebackhide__ = not _tb.debug()
    procs, fake = _options(pyfuncitem)
    fn = pyfuncitem.obj
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        pytest.fail("@pytest.mark.csp_mp runs plain functions, not coroutines or generators",
                    pytrace=False)
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    before = L.snapshot()
    exc, found = run(_main, fn, kwargs, fake, procs=procs)
    if exc is not None:
        _tb.trim(exc)  # the test's frames, not the runtime's it blocked in (CSP_MP_DEBUG=1: all)
        raise exc
    problems = []
    leaked, unseen, objects = found
    if leaked or unseen:
        problems.append(L.format_leaks(leaked, unseen))
    if objects:
        problems.append(L.format_objects(objects))
    left = L.resources_left(before)
    if left:
        problems.append("csp_mp: left behind after the test:\n" + "\n".join(left))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    L.begin_test()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    L.end_test()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    __tracebackhide__ = not _tb.debug()  # pytest shows the test's frames, not the plugin's
    check = item.config.getoption("csp_mp_leaks") and item.get_closest_marker(MARK) is None
    before = L.snapshot() if check else None
    objects = L.live_objects() if check else {}
    result = yield
    if before is not None and proc.implicit is not None:
        _check_implicit(before, objects)
    return result


def _check_implicit(before: L.Snapshot, objects_before: dict[str, int]) -> None:
    """After a test that used the implicit runtime: its leaked goroutines and, once no other
    goroutine is alive, the shared objects it left live; then what its Ps left once
    stopped."""
    __tracebackhide__ = True
    hub = proc.implicit
    leaked: list[L.StackEntry] = []
    unseen = 0
    objects: dict[str, int] = {}
    if hub.current is hub.main_g:
        leaked, unseen = L.leaked_goroutines()
        if num_goroutine() == 1:
            objects = L.objects_left(objects_before)
    shutdown()
    problems = []
    if leaked or unseen:
        problems.append(L.format_leaks(leaked, unseen))
    if objects:
        problems.append(L.format_objects(objects))
    left = L.resources_left(before)
    if left:
        problems.append("csp_mp: left behind after the test:\n" + "\n".join(left))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
