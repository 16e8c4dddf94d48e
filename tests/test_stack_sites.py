"""Go's ``created by`` lines in runtime.stack(): always recorded, for every goroutine but main,
whatever made it (go(), go_local, errgroup, the executor), on one P and across Ps, on both
runtime paths (the compiled core's and the pure-Python one)."""

from __future__ import annotations

import inspect
import sys
import time
import types
from typing import Any

import pytest

import csp_mp
from csp_mp import Chan, errgroup, go, go_local, runtime
from csp_mp._shm import native
from csp_mp._testing.stacks import StackEntry, parse_stack
from csp_mp.futures import Executor

DEADLINE = 20.0
PATHS = [pytest.param("1", id="compiled", marks=pytest.mark.skipif(
    not native.built(), reason="the compiled core is not built")),
    pytest.param("0", id="python")]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on both runtime paths, with no debug switch of any kind."""
    monkeypatch.setenv("CSP_MP_NATIVE", request.param)
    monkeypatch.delenv("CSP_MP_DEBUG", raising=False)
    return str(request.param)


def _line_of(fn: Any, fragment: str) -> int:
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if fragment in line)


def _created_by(fn: Any, fragment: str, creator: int = 1) -> str:
    """The two lines of Go's ``created by`` for a go() call in ``fn`` on its ``fragment`` line."""
    return (f"created by {__name__}.{fn.__qualname__} in goroutine {creator}\n"
            f"\t{__file__}:{_line_of(fn, fragment)}\n")


def _entries(text: str, function: str) -> list[StackEntry]:
    return [e for e in parse_stack(text) if e.matches(function)]


def _stuck(ch: Chan) -> None:
    ch.recv()


def _one_p_main() -> str:
    ch: Chan = Chan()
    go(_stuck, ch)  # made by go()
    go_local(_stuck, ch)  # made by go_local()
    text = runtime.stack()
    ch.close()
    return text


def test_go_and_go_local_on_one_p_name_their_line_and_creator(path: str) -> None:
    text = csp_mp.run(_one_p_main, procs=1)
    entries = _entries(text, "_stuck")
    assert len(entries) == 2, text  # one line each: two entries
    assert _created_by(_one_p_main, "made by go()") in entries[0].text, text
    assert _created_by(_one_p_main, "made by go_local()") in entries[1].text, text
    assert "created by" not in parse_stack(text)[0].text  # main: none, as in Go


def _report_and_park(ps: Chan, ch: Chan) -> None:
    ps.send((runtime.current_p(), runtime.goid()))
    ch.recv()


def _on_p1(made_by: Any) -> tuple[str, int]:
    """From a goroutine: goroutines started by ``made_by(fn, *args)`` until one ran on P1;
    the stack then, and the id of the goroutine that started them."""
    ps: Chan = Chan(64)
    ch: Chan = Chan()
    deadline = time.monotonic() + DEADLINE
    while True:
        for _ in range(8):
            made_by(_report_and_park, ps, ch)
        if any(ps.recv()[0] == 1 for _ in range(8)):
            break
        assert time.monotonic() < deadline, "no goroutine ran on P1"
    text = runtime.stack()
    ch.close()
    return text, runtime.goid()


def _go_on_p1(fn: Any, *args: Any) -> None:
    go(fn, *args)  # the go() line


def _cross_p_main() -> tuple[str, int]:
    return _on_p1(_go_on_p1)


def _from_a_goroutine(out: Chan) -> None:
    out.send(_on_p1(_go_on_p1))


def _cross_p_from_a_goroutine_main() -> tuple[str, int]:
    out: Chan = Chan(1)
    go_local(_from_a_goroutine, out)
    return out.recv()


@pytest.mark.parametrize("main", [_cross_p_main, _cross_p_from_a_goroutine_main],
                         ids=["by-main", "by-another-goroutine"])
def test_a_goroutine_that_ran_on_another_p_names_the_go_line(path: str, main: Any) -> None:
    text, creator = csp_mp.run(main, procs=2)
    on_p1 = [e for e in _entries(text, "_report_and_park") if e.p == 1]
    assert on_p1 and creator == (1 if main is _cross_p_main else 2), text
    for e in on_p1:
        assert _created_by(_go_on_p1, "the go() line", creator) in e.text, text


def _stack_once(shown: Any) -> str:
    """runtime.stack() once an entry of it is ``shown`` (a predicate): a goroutine queued for
    any P is listed once a P has made its record, and its stack once it has started."""
    deadline = time.monotonic() + DEADLINE
    while True:
        text = runtime.stack()
        if any(shown(e) for e in parse_stack(text)):
            return text
        assert time.monotonic() < deadline, text
        runtime.gosched()


def _group_main() -> str:
    ch: Chan = Chan()
    g = errgroup.Group()
    g.go(_stuck, ch)  # the errgroup's go
    text = _stack_once(lambda e: e.matches("_errgroup._body"))
    ch.close()
    g.wait()
    return text


@pytest.mark.parametrize("procs", [1, 2])
def test_an_errgroup_goroutine_names_the_group_go_line(path: str, procs: int) -> None:
    text = csp_mp.run(_group_main, procs=procs)
    made = _created_by(_group_main, "the errgroup's go")
    assert [made in e.text for e in _entries(text, "_errgroup._body")] == [True], text


def _executor_main() -> str:
    ch: Chan = Chan()
    with Executor() as ex:  # on the running runtime
        fut = ex.submit(_stuck, ch)  # the submit
        text = _stack_once(lambda e: ", in _stuck\n" in e.text)  # the task has started
        ch.close()
        fut.result()
    return text


@pytest.mark.parametrize("procs", [1, 2])
def test_an_executor_task_names_the_submit_line(path: str, procs: int) -> None:
    text = csp_mp.run(_executor_main, procs=procs)
    made = _created_by(_executor_main, "the submit")
    task = [e for e in parse_stack(text) if ", in _stuck\n" in e.text]
    assert task and made in task[0].text, text


def _queued_executor_main() -> str:
    first, third = Chan(), Chan()
    with Executor(max_workers=2) as ex:
        a = ex.submit(_stuck, first)  # runs on this P: nothing else of the executor runs
        b = ex.submit(_stuck, first)  # goes to any P (to this one when it is the only one)
        c = ex.submit(_stuck, third)  # the queued submit: started once a or b ends
        first.close()
        a.result()
        b.result()
        text = _stack_once(lambda e: ", in _stuck\n" in e.text)  # c, the one left
        third.close()
        c.result()
    return text


@pytest.mark.parametrize("procs", [1, 2])
def test_a_queued_executor_task_names_its_submit_line_not_the_executor(path: str,
                                                                      procs: int) -> None:
    text = csp_mp.run(_queued_executor_main, procs=procs)
    made = _created_by(_queued_executor_main, "the queued submit")
    assert made in text, text
    assert "_futures/executor.py" not in text, text


def _exec_main() -> str:
    ch: Chan = Chan()
    where = {"go_local": go_local, "_stuck": _stuck, "ch": ch}
    exec(compile("go_local(_stuck, ch)", "<exec'd>", "exec"), where)
    lineless = compile("go_local(_stuck, ch)", "<no lines>", "exec").replace(co_linetable=b"")
    exec(lineless, where)
    text = runtime.stack()
    ch.close()
    return text


def test_exec_d_code_and_code_without_lines_do_not_break_the_dump(path: str) -> None:
    text = csp_mp.run(_exec_main, procs=1)
    assert "created by <module> in goroutine 1\n\t<exec'd>:1\n" in text, text
    assert "created by <module> in goroutine 1\n\t<no lines>:?\n" in text, text


def _wait_item(ch: Chan) -> None:
    ch.recv()


def _in_chunk(e: StackEntry) -> bool:
    """A goroutine of the map (not main, which runs a share of the chunks itself) in a chunk."""
    return e.function != "main" and ", in _wait_item\n" in e.text


def _watch(ch: Chan, out: Chan) -> None:
    out.send(_stack_once(_in_chunk))
    ch.close()


def _map_main() -> str:
    ch: Chan = Chan()
    out: Chan = Chan(1)
    go_local(_watch, ch, out)
    list(csp_mp.map(_wait_item, [ch] * 4, chunksize=1))  # the map
    return out.recv()


@pytest.mark.parametrize("procs", [1, 2])
def test_a_map_chunk_names_the_map_line(path: str, procs: int) -> None:
    text = csp_mp.run(_map_main, procs=procs)
    made = _created_by(_map_main, "the map")
    chunk = [e for e in parse_stack(text) if _in_chunk(e)]
    assert chunk and made in chunk[0].text, text


class _Touchy(types.ModuleType):
    """A module whose missing attributes raise what a lazy loader may raise."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError(f"{name}: not installed")


def _touchy_main() -> str:
    ch: Chan = Chan()
    exec(compile("go_local(_stuck, ch)", "<touchy>", "exec"),
         {"go_local": go_local, "_stuck": _stuck, "ch": ch})
    text = runtime.stack()
    ch.close()
    return text


def test_a_module_that_raises_on_attribute_access_does_not_break_the_dump(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "_touchy_module", _Touchy("_touchy_module"))
    text = csp_mp.run(_touchy_main, procs=1)
    assert "created by <module> in goroutine 1\n\t<touchy>:1\n" in text, text
