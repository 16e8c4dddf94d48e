"""csp_mp.errgroup on one P: go, try_go, set_limit, wait, with_context."""

from __future__ import annotations

import pytest
from helpers import run1, wait_until

from csp_mp import Chan, context, default, errgroup, runtime, select
from csp_mp.errgroup import Group, with_context


def test_wait_returns_none_when_every_goroutine_succeeds() -> None:
    def main():
        g = Group()
        out = []
        for i in range(10):
            g.go(out.append, i)
        g.go(lambda a, b=0: out.append(a + b), 100, b=1)
        assert g.wait() is None
        return sorted(out)
    assert run1(main) == [*range(10), 101]


def test_wait_reraises_the_first_error() -> None:
    first = ValueError("first")

    def main():
        g = Group()
        gate = Chan()

        def fail_first():
            raise first

        def fail_later():
            gate.recv()
            raise KeyError("later")

        g.go(fail_later)
        g.go(fail_first)
        g.go(lambda: None)
        wait_until(lambda: runtime.num_goroutine() == 2, "the first error recorded")
        gate.send(None)
        with pytest.raises(ValueError) as info:
            g.wait()
        assert info.value is first
        with pytest.raises(ValueError):  # wait again: still the first error
            g.wait()
    run1(main)


def test_with_context_cancels_on_first_error() -> None:
    def main():
        g, ctx = with_context(context.background())
        observed = Chan(1)

        def watcher():
            ctx.done().recv()
            observed.send(ctx.err())

        g.go(watcher)
        g.go(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            g.wait()
        assert isinstance(observed.recv(), context.Canceled)
    run1(main)


def test_with_context_cancels_when_wait_returns() -> None:
    def main():
        parent, cancel = context.with_cancel(context.background())
        g, ctx = with_context(parent)
        g.go(lambda: None)
        assert ctx.err() is None
        g.wait()
        assert isinstance(ctx.err(), context.Canceled)
        assert parent.err() is None
        cancel()
    run1(main)


def test_set_limit_bounds_concurrency() -> None:
    def main():
        g = Group()
        g.set_limit(2)
        active = peak = 0

        def work():
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            for _ in range(3):
                runtime.gosched()
            active -= 1

        for _ in range(10):
            g.go(work)  # blocks while two are running
        g.wait()
        return peak
    assert run1(main) == 2


def test_try_go_refuses_at_the_limit() -> None:
    def main():
        g = Group()
        g.set_limit(1)
        gate = Chan()
        assert g.try_go(gate.recv) is True
        ran = []
        assert g.try_go(ran.append, 1) is False
        with pytest.raises(RuntimeError):
            g.set_limit(3)  # goroutines still active
        gate.send(None)
        g.wait()
        assert g.try_go(ran.append, 2) is True
        g.wait()
        g.set_limit(-1)  # no limit
        for i in range(5):
            assert g.try_go(ran.append, i)
        g.wait()
        return ran
    ran = run1(main)
    assert ran[0] == 2 and sorted(ran[1:]) == [0, 1, 2, 3, 4]


def test_go_needs_a_callable() -> None:
    def main():
        g = Group()
        with pytest.raises(TypeError):
            g.go(3)
        with pytest.raises(TypeError):
            g.try_go(None)
        assert g.wait() is None
    run1(main)


def test_error_does_not_panic_the_program() -> None:
    def main():
        g = Group()
        g.go(lambda: [][1])
        i, _ = select(Chan().recv, default)
        assert i == 1
        with pytest.raises(IndexError):
            g.wait()
        return "ok"
    assert run1(main) == "ok"


def test_module_exports() -> None:
    assert errgroup.Group is Group and errgroup.with_context is with_context
