"""The compiled Spawner (task.c) and Handles (handles.c) under misuse and corrupt arena words.

Each case runs in a child interpreter of its own, so that a crash is a failed test naming its
case rather than a dead test runner. A case asserts what it must: the exception's type and a
fragment of its message, and the state left behind (the ring, the deques, the reference and
live-channel words, the dicts Handles keeps, what slow() was given).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORD = 8


def _world() -> Any:
    from test_native_fuzz import World  # the child has this directory on its path

    return World()


def _raises(exc: type[BaseException], fragment: str, fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except exc as e:
        assert fragment in str(e), f"{type(e).__name__}: {e!r} lacks {fragment!r}"
        return e
    raise AssertionError(f"no {exc.__name__} ({fragment!r})")


# ---------------------------------------------------------------- the Spawner (task.c)

class _Chan:
    """The channel type of the cases' encoders (a frame names it through chan_ext)."""


def _f() -> None:
    pass


class _Spawn:
    """A Spawner on the world's ring (locked), or a lock-free one of its own (spsc), its own
    hint word and the world's doorbell."""

    def __init__(self, w: Any, chan: int | None = None, spsc: bool = False, **kw: Any) -> None:
        from csp_mp._shm.ring import make_ring

        self.w = w
        r = w.r
        self.ring = make_ring(w.arena, 1024, spsc=True).offset if spsc else w.ring
        core = w.core_mod
        self.enc = core.TaskEncoder(_Chan, lambda c: chan, 1 << 16, r)
        self.hint = w.zeros(1)
        self.frames: deque = deque()
        self.entries: deque = deque()
        self.published: Any = deque()
        self.wakes: list = []
        args: dict[str, Any] = dict(
            encoder=self.enc, hub=object(), owner=0, frames=self.frames, entries=self.entries,
            place=lambda *a: None, flush=lambda: None, batch=64, hint=self.hint, ring=self.ring,
            published=self.published, wake=lambda: self.wakes.append(1),
            bells=(w.bell.offset,))
        args.update(kw)
        self.published = args["published"]
        self.sp = core.Spawner(**args)
        self.sp.fn_last = _f
        self.sp.entry = (b"d" * 16, b"fnbytes", "")

    def go(self, *args: Any) -> Any:
        return self.sp.go(_f, args, {})

    def ring_len(self) -> int:
        return int(self.w.r.ring_len(self.ring))


def _ring_without_hint(w: Any) -> None:
    """A ring but no hint word: publish() exchanged the word at byte offset -1 (finding 1)."""
    _raises(ValueError, "a ring needs a hint word", lambda: _Spawn(w, hint=-1))


def _arena_words(w: Any) -> list[int]:
    return [w.r.load(o) for o in range(0, w.size, WORD)]


def _hint_corrupt(w: Any, value: int) -> None:
    """The shared hint word reads a value naming no P: ValueError, the frame published all the
    same, no bell posted anywhere, nothing else in the arena written (finding 2)."""
    from csp_mp._shm.arena import _LOCKS_AT

    s = _Spawn(w)
    w.r.store(s.hint, value)
    before = _arena_words(w)
    _raises(ValueError, "not a P of 1", s.go)
    assert s.ring_len() == 1 and len(s.published) == 1 and not s.frames and not s.entries
    assert w.r.load(s.hint) == 0  # the exchange took it
    after = _arena_words(w)
    tail_line = (w.ring + 2 * 64) // WORD
    changed = [i * WORD for i, (a, b) in enumerate(zip(before, after, strict=True))
               if a != b and i != s.hint // WORD and i != tail_line]
    data, lock = w.ring + 3 * 64, _LOCKS_AT + 64 * w.r.load(w.ring + 2 * WORD)
    # the frame, and the ring's lock taken and given (its mutex's words)
    assert all(data <= o < data + 1024 or lock <= o < lock + 64 for o in changed), (
        f"written: {changed}")
    assert w.cbell().wait(0) is False  # the world's doorbell was not rung


def _release_in_append(w: Any) -> None:
    """published.append runs Python code (a bounded deque drops an item whose finalizer
    releases the region) between the first look at the ring and the put: the ring is opened
    again after it, so ValueError, not a write through stale pointers (finding 3). A lock-free
    ring: a locked one would find the region closed when taking its lock."""
    class Releases:
        def __del__(self) -> None:
            w.r.release()

    published: deque = deque([Releases()], maxlen=1)
    s = _Spawn(w, spsc=True, published=published)
    _raises(ValueError, "closed", s.go)
    assert len(published) == 0  # the entry taken back out
    assert not s.frames and not s.entries


def _ring_broken_in_append(w: Any, handed_chan: bool) -> None:
    """A frame naming a channel given up before it is in the ring gives its count back; one
    already in the ring (an error after, a corrupt hint word) keeps it (finding 5)."""
    refs = w.chan + 10 * WORD
    if handed_chan:
        s = _Spawn(w, chan=w.chan)
        w.r.store(s.hint, 1 << 40)
        before = w.r.load(refs)
        _raises(ValueError, "corrupt control block", lambda: s.go(_Chan()))
        assert w.r.load(refs) == before + 1, "the ring's frame lost its count"
        assert s.ring_len() == 1 and len(s.published) == 1
        return

    class Breaks:
        def __del__(self) -> None:
            w.r.store(w.ring, 7)  # the ring's magic gone

    published: deque = deque([Breaks()], maxlen=1)
    s = _Spawn(w, chan=w.chan, published=published)
    before = w.r.load(refs)
    _raises(ValueError, "no ring", lambda: s.go(_Chan()))
    assert w.r.load(refs) == before, "a frame given up kept its count"
    assert len(published) == 0


def _made_reentrant(w: Any) -> None:
    """resolve(), called for a new site, runs go() again, which replaces the Spawner's last
    answer: the outer call must not read the freed one (finding 4). Only a build with
    AddressSanitizer (make sanitize) sees such a read; elsewhere the case checks the answer."""
    core = w.core_mod
    depth = [1]
    entries: deque = deque()

    def resolve(code: Any, lasti: int) -> bytes:
        if depth[0] == 0:
            depth[0] = 1
            sp.go(_f, (), {})  # replaces last_made
            entries.clear()  # its only other holder: the old answer is freed now
            junk = [tuple([i, i]) for i in range(2500)]
            del junk
        return bytes([0x93, 0xA1, 0x66, 0xA1, 0x67, lasti & 0x7F])

    sites = core.Sites("/nonexistent-pkg/", resolve)
    enc = core.TaskEncoder(_Chan, lambda c: None, 1 << 16, None)
    sp = core.Spawner(enc, object(), 0, deque(), entries, lambda *a: None, lambda: None,
                      1 << 30, sites)
    sp.fn_last = _f
    sp.entry = (b"d" * 16, b"fnbytes", "")

    def caller() -> None:
        sp.go(_f, (), {})

    caller()  # line A: last_made set, no re-entry
    depth[0] = 0
    caller()  # line B: a new site, resolve re-enters
    made = entries[-1][4]
    assert type(made) is tuple and made[1] == 0 and type(made[0]) is bytes


def _not_deques(w: Any) -> None:
    """frames, entries and published must be deques themselves (finding 6)."""
    class Sub(deque):
        def append(self, x: Any) -> None:
            raise AssertionError("a subclass's append ran")

    for kw in ({"frames": []}, {"entries": Sub()}, {"published": Sub()}, {"published": None}):
        _raises(TypeError, "collections.deque", lambda kw=kw: _Spawn(w, **kw))


# ---------------------------------------------------------------- Handles (handles.c)

class _St:
    """A channel state as Handles sees it through facts()."""


class _Ch:
    """A channel handle (weak-referenceable)."""


class _Handles:
    """A Handles on the world's arena, its channel block (capacity 2, one reference) and a
    live-channel word reading 1."""

    def __init__(self, w: Any, states: dict | None = None, spares: Any = None,
                 adopt: Callable[..., Any] | None = None, dead: Any = None) -> None:
        self.w = w
        self.off = w.chan
        self.st = _St()
        self.live = w.zeros(1)
        w.r.store(self.live, 1)
        w.r.store(self.off + 10 * WORD, 1)  # W_REFS: the handle's
        self.states = {} if states is None else states
        self.spares = {256: []} if spares is None else spares
        self.chans: dict = {}
        self.names: dict = {}
        self.dead = [] if dead is None else dead
        self.slow: list = []
        self.adopted: list = []

        def adopt_hook(ch: Any, st: Any, cap: int) -> Any:
            self.adopted.append(cap)
            return adopt(ch, st, cap) if adopt is not None else (_Ch() if ch is None else ch)

        self.hs = w.core_mod.Handles(
            w.r, self.chans, self.names, self.dead, self.states, self.spares, 16, {}, 1, 16,
            lambda st: (self.off, 0, True), adopt_hook,
            lambda *a: self.slow.append([list(x) for x in a]), self.live)

    def die(self) -> None:
        """Register a handle and let it die: its HandleRef on the dead list."""
        import gc

        ch = _Ch()
        self.hs.register(ch, self.st)
        del ch
        gc.collect()
        assert len(self.dead) == 1


def _release_loses_state(w: Any, how: str) -> None:
    """The last reference dropped, then a later step fails: the state still reaches slow() in
    `ended` (finding 7)."""
    if how == "retire":
        h = _Handles(w)
        h.die()
        w.r.store(h.off, 0)  # the block's magic gone: chan_retire fails
        _raises(ValueError, "no shared channel", h.hs.release)
    else:
        class Bad:
            def __hash__(self) -> int:
                return hash(256)

            def __eq__(self, o: object) -> bool:
                raise RuntimeError("eq")

        h = _Handles(w, spares={Bad(): []})
        h.die()
        _raises(RuntimeError, "eq", h.hs.release)
    assert w.r.load(h.off + 10 * WORD) == 0
    assert h.slow == [[[h.st], [], []]], f"slow() was given {h.slow}"
    assert not h.chans and not h.names and not h.dead


def _take_state_fails(w: Any, how: str) -> None:
    """A promotion from the spares that fails leaves nothing behind: states as it was, no
    registration, adopt() not run when the registration fails, the block retired again, the
    live word as it was and the state back among the spares (finding 8)."""
    import weakref

    old = _St()

    def raising(ch: Any, st: Any, cap: int) -> Any:
        raise RuntimeError("adopt")

    states = {w.chan: old}
    h = _Handles(w, states=states, adopt=raising if how == "adopt" else None)
    w.r.store(h.off, 0)  # a spare's block is retired
    h.spares[256].append(h.st)
    ch: Any = object() if how == "register" else _Ch()
    if how == "register":
        _raises(TypeError, "weak reference", lambda: h.hs.promote(ch, 2))
        assert h.adopted == [], "adopt() ran before the registration that failed"
    else:
        _raises(RuntimeError, "adopt", lambda: h.hs.promote(ch, 2))
        assert weakref.getweakrefcount(ch) == 0, "the registration's HandleRef survived"
    assert states == {w.chan: old} and states[w.chan] is old
    assert not h.chans and not h.names
    assert h.spares[256] == [h.st]
    assert w.r.load(h.live) == 1
    assert w.r.load(h.off) == 0  # retired again


def _dead_not_a_list(w: Any) -> None:
    """The dead list must be a list itself: its append is the weak references' callback
    (finding 10)."""
    class Sub(list):
        def append(self, x: Any) -> None:
            raise AssertionError("a subclass's append ran")

    _raises(TypeError, "dead must be a list", lambda: _Handles(w, dead=Sub()))


def _buf_bytes_agree(w: Any) -> None:
    """A block ended by release goes to the spares of the size block.py's _buf_bytes gives for
    its capacity word (layout.py's numbers on both sides; a corrupt capacity reading below 0
    counts as 0) (finding 9)."""
    from csp_mp._chan.block import _buf_bytes
    from csp_mp._shm import layout as L

    caps = [0, 1, 7, 8, 9, 100, L.CHAN_BUF_CAP_MAX - 1, L.CHAN_BUF_CAP_MAX, 5000, 1 << 62,
            1 << 63, (1 << 64) - 5]
    for cap in caps:
        signed = cap - (1 << 64) if cap >= 1 << 63 else cap
        want = _buf_bytes(signed)
        w2 = _world()
        h = _Handles(w2, spares={_buf_bytes(c - (1 << 64) if c >= 1 << 63 else c): []
                                 for c in caps})
        w2.r.store(h.off + WORD, cap)  # W_CAP
        h.die()
        h.hs.release()
        got = [k for k, v in h.spares.items() if v]
        assert got == [want], f"capacity {cap}: spares {got}, block.py says {want}"
        w2.arena.close()


CASES: dict[str, Callable[[Any], None]] = {
    "spawner-ring-without-hint": _ring_without_hint,
    "spawner-hint-huge": lambda w: _hint_corrupt(w, 1 << 63 | 1 << 40),
    "spawner-hint-2pow63": lambda w: _hint_corrupt(w, 1 << 63),
    "spawner-hint-past-bells": lambda w: _hint_corrupt(w, 2),
    "spawner-release-in-append": _release_in_append,
    "spawner-made-reentrant": _made_reentrant,
    "spawner-given-up-frame-gives-counts-back": lambda w: _ring_broken_in_append(w, False),
    "spawner-handed-over-frame-keeps-counts": lambda w: _ring_broken_in_append(w, True),
    "spawner-containers-not-deques": _not_deques,
    "handles-release-retire-fails": lambda w: _release_loses_state(w, "retire"),
    "handles-release-spares-lookup-fails": lambda w: _release_loses_state(w, "lookup"),
    "handles-take-state-register-fails": lambda w: _take_state_fails(w, "register"),
    "handles-take-state-adopt-fails": lambda w: _take_state_fails(w, "adopt"),
    "handles-dead-not-a-list": _dead_not_a_list,
    "handles-buf-bytes-agree-with-block-py": _buf_bytes_agree,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_in_a_child(case: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT, CSP_MP_NATIVE="1")
    if case == "spawner-made-reentrant":  # a freed tuple is free()d: AddressSanitizer sees a read
        env["PYTHONMALLOC"] = "malloc"
    out = subprocess.run([sys.executable, os.path.abspath(__file__), case], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (
        f"case {case}: the child died or failed (exit {out.returncode}):\n"
        f"{out.stdout[-1000:]}\n{out.stderr[-3000:]}")
    assert out.stdout.strip().splitlines()[-1:] == [f"ok {case}"], out.stdout[-1000:]


def _child(case: str) -> int:
    print("case", case, flush=True)
    CASES[case](_world())
    print("ok", case, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
