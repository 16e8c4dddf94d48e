"""csp_mp.context on one P: cancel, timeout, deadline, value, parent -> child propagation."""

from __future__ import annotations

import time

import pytest
from helpers import run1, wait_blocked

from csp_mp import Chan, after, context, default, go, nilchan, select
from csp_mp.context import Canceled, DeadlineExceeded


def _is_done(ctx: context.Context) -> bool:
    return select(ctx.done().recv, default)[0] == 0


@pytest.mark.parametrize("root", [context.background, context.todo])
def test_root_contexts(root) -> None:
    ctx = root()
    assert ctx is root()
    assert ctx.done() is nilchan
    assert ctx.err() is None
    assert ctx.value("k") is None
    assert ctx.deadline() == (None, False)
    assert isinstance(ctx, context.Context)


def test_with_cancel_closes_done_and_sets_err() -> None:
    def main():
        ctx, cancel = context.with_cancel(context.background())
        assert ctx.err() is None and not _is_done(ctx)
        assert ctx.deadline() == (None, False)
        out = Chan(1)
        go(lambda: out.send(ctx.done().recv_ok()))
        wait_blocked(ctx.done(), receivers=1)
        cancel()
        assert out.recv() == (None, False)
        err = ctx.err()
        assert isinstance(err, Canceled) and isinstance(err, Exception)
        assert str(err) == "context canceled"
        with pytest.raises(Canceled):
            raise ctx.err()
        cancel()  # idempotent
        assert isinstance(ctx.err(), Canceled)
    run1(main)


def test_parent_cancel_reaches_every_descendant() -> None:
    def main():
        root, cancel = context.with_cancel(context.background())
        child, _c1 = context.with_cancel(root)
        valued = context.with_value(child, "k", "v")
        grandchild, _c2 = context.with_timeout(valued, 60)
        sibling, cancel_sibling = context.with_cancel(root)
        cancel_sibling()  # a child's cancel does not touch its parent or siblings
        assert root.err() is None and child.err() is None
        cancel()
        for ctx in (root, child, valued, grandchild):
            assert _is_done(ctx)
            assert isinstance(ctx.err(), Canceled)
        assert grandchild.value("k") == "v"
    run1(main)


def test_child_of_cancelled_parent_starts_cancelled() -> None:
    def main():
        parent, cancel = context.with_cancel(context.background())
        cancel()
        child, _ = context.with_cancel(parent)
        assert _is_done(child) and isinstance(child.err(), Canceled)
    run1(main)


@pytest.mark.csp_mp(fake_time=True)
def test_with_timeout_expires_with_deadline_exceeded() -> None:
    t0 = after(0).recv()
    ctx, cancel = context.with_timeout(context.background(), 30)
    assert ctx.deadline() == (t0 + 30, True)
    ctx.done().recv()
    assert after(0).recv() == t0 + 30  # expired exactly at its deadline, in virtual time
    err = ctx.err()
    assert isinstance(err, DeadlineExceeded) and isinstance(err, TimeoutError)
    assert str(err) == "context deadline exceeded"
    cancel()  # after expiry the error stays DeadlineExceeded
    assert isinstance(ctx.err(), DeadlineExceeded)


def test_cancel_before_deadline_is_canceled() -> None:
    def main():
        ctx, cancel = context.with_timeout(context.background(), 60)
        cancel()
        assert isinstance(ctx.err(), Canceled)
    run1(main)


def test_with_deadline_in_the_past_is_expired_at_once() -> None:
    def main():
        ctx, _ = context.with_deadline(context.background(), time.monotonic() - 1)
        assert _is_done(ctx) and isinstance(ctx.err(), DeadlineExceeded)
    run1(main)


def test_parent_deadline_wins_when_earlier_and_propagates() -> None:
    def main():
        parent, _ = context.with_timeout(context.background(), 0.01)
        pt, _ok = parent.deadline()
        child, _ = context.with_deadline(parent, pt + 60)
        assert child.deadline() == (pt, True)
        plain, _ = context.with_cancel(parent)
        assert plain.deadline() == (pt, True)
        plain.done().recv()
        assert isinstance(plain.err(), DeadlineExceeded)
        assert isinstance(child.err(), DeadlineExceeded)
    run1(main)


@pytest.mark.csp_mp(fake_time=True)
def test_child_deadline_earlier_than_parents() -> None:
    parent, cancel = context.with_timeout(context.background(), 60)
    child, _ = context.with_timeout(parent, 59)
    child.done().recv()
    assert isinstance(child.err(), DeadlineExceeded)
    assert parent.err() is None
    cancel()


def test_with_value() -> None:
    def main():
        base, cancel = context.with_cancel(context.background())
        a = context.with_value(base, "user", "ann")
        b = context.with_value(a, "req", 7)
        c = context.with_value(b, "user", "bob")
        assert (b.value("user"), b.value("req"), b.value("nope")) == ("ann", 7, None)
        assert c.value("user") == "bob" and a.value("user") == "ann"
        assert a.done() is base.done() and c.done() is base.done()
        assert c.deadline() == base.deadline()
        cancel()
        assert isinstance(c.err(), Canceled)
        with pytest.raises(TypeError):
            context.with_value(base, None, 1)
        top = context.with_value(context.background(), "k", 1)
        assert top.done() is nilchan and top.err() is None
    run1(main)


def test_parent_must_be_a_context() -> None:
    with pytest.raises(TypeError):
        context.with_cancel(None)  # type: ignore[arg-type]


def test_goroutine_stops_on_cancel() -> None:
    def main():
        ctx, cancel = context.with_cancel(context.background())
        work = Chan()
        result = Chan(1)

        def worker():
            n = 0
            while True:
                i, _ = select(ctx.done().recv, work.recv)
                if i == 0:
                    result.send((n, ctx.err()))
                    return
                n += 1

        go(worker)
        for _ in range(3):
            work.send(None)
        cancel()
        n, err = result.recv()
        assert n == 3 and isinstance(err, Canceled)
    run1(main)
