"""Goroutine arguments on their way to another P: the plain msgpack form and the codec form."""

from __future__ import annotations

import time
from typing import Any

import mp_helpers as H
import pytest

import csp_mp
from csp_mp import Chan, go
from csp_mp._hub.g import site_bytes
from csp_mp._mp import tasks

PLAIN_CASES = [
    (),
    (7, -3, 2**63 - 1, 2**64 - 1),
    (2.5, "text", "", b"bytes", True, False, None),
]
CODEC_CASES = [  # argument factories (runtime objects are made inside each run)
    lambda: ((1, 2),),  # a tuple argument: msgpack would hand back a list
    lambda: ([1, 2], {"a": 1}),  # containers go through the codec's exactness check
    lambda: (2**70,),  # beyond 64 bits
    lambda: ("\ud800",),  # a lone surrogate msgpack cannot encode
    lambda: (b"x" * (tasks.OOB_MIN + 1),),  # a large buffer goes out of band
    lambda: (Chan[int](1),),  # a typed channel carries its type
    lambda: (csp_mp.atomic.Int64(5),),
]


def _typed(values: tuple) -> list:
    return [(v, type(v)) for v in values]


def _round_trip(args: tuple, kwargs: dict) -> tuple[bool, tuple, dict]:
    from csp_mp._hub import current_hub

    arena = current_hub().broker.arena
    frame = tasks.pack(1, 0, H.noop, args, kwargs, arena)
    plain = tasks.is_plain(frame)
    _fn, got_args, got_kwargs, _warn, _digest = tasks.unpack(frame, arena)
    return plain, got_args, got_kwargs


@pytest.mark.parametrize("args", PLAIN_CASES, ids=["none", "ints", "scalars"])
def test_scalar_and_channel_arguments_travel_as_plain_msgpack(args: tuple) -> None:
    def main():
        ch = Chan(1)
        plain, got, kw = _round_trip((*args, ch), {})
        assert got[-1] is ch  # this P's one handle on the promoted channel
        return plain, _typed(got[:-1]), kw

    plain, got, kw = csp_mp.run(main, procs=2)
    assert plain is True
    assert got == _typed(args)
    assert kw == {}


CODEC_IDS = ["tuple", "containers", "bigint", "surrogate", "oob", "typed", "int64"]


@pytest.mark.parametrize("make_args", CODEC_CASES, ids=CODEC_IDS)
def test_other_arguments_go_through_the_codec_unchanged(make_args: Any) -> None:
    def main():
        args = make_args()
        plain, got, kw = _round_trip(args, {})
        same = [g is a or (g == a and type(g) is type(a)) for g, a in zip(got, args, strict=True)]
        if isinstance(args[0], Chan):
            same = [got[0] is args[0]]
        if isinstance(args[0], csp_mp.atomic.Int64):
            same = [got[0].load() == 5]
        return plain, same

    plain, same = csp_mp.run(main, procs=2)
    assert plain is False
    assert all(same)


def test_keyword_arguments_go_through_the_codec() -> None:
    def main():
        return _round_trip((1,), {"k": "v"})

    plain, got, kw = csp_mp.run(main, procs=2)
    assert (plain, got, kw) == (False, (1,), {"k": "v"})


def test_plain_arguments_arrive_exactly_on_another_p() -> None:
    args = (7, 2**64 - 1, -1, 2.5, "s", b"x", True, None)

    def main():
        out = Chan(64)
        deadline = time.monotonic() + H.DEADLINE
        while time.monotonic() < deadline:
            for _ in range(32):
                go(H.report_args, out, *args)
            got = [out.recv() for _ in range(32)]
            remote = [seen for p, seen in got if p != 0]
            local = [seen for p, seen in got if p == 0]
            if remote:
                return remote[0], local[:1]
        raise AssertionError("no goroutine ran on P1")

    remote, local = csp_mp.run(main, procs=2)
    expected = [(a, type(a).__name__) for a in args]
    assert remote == expected
    assert all(seen == expected for seen in local)


# ---------------------------------------------------------------- stolen frames decoded whole


def _decode_case() -> dict:
    """Frames of this P decoded as a thief would: what the compiled core decodes whole, where it
    stops, and the channel's count before and after (each frame names it once)."""
    from csp_mp._hub import current_hub
    from csp_mp._mp import promote

    b: Any = current_hub().broker
    ch = Chan(4)
    entry = tasks.pickle_fn(H.noop)
    site = site_bytes(_decode_case.__code__, 0)
    plain = [b.runq.encode_plain(i, 0, entry, (i, "s", 2.5, None, ch), (site, 40 + i))
             for i in range(3)]
    codec = tasks.pack(9, 0, H.noop, ((1, 2),), {}, b.arena)
    refs = lambda: int(ch._st.add_refs(0))  # noqa: E731
    before = refs()
    decode = b.runq.decode_plain
    unknown = decode(plain[:1], 0, {}, promote.names)  # the callable not known yet: stops
    after_unknown = refs()
    fns = {entry[0]: H.noop}
    whole = decode([*plain[:2], codec, plain[2]], 0, fns, promote.names)
    after_two = refs()
    rest = decode([*plain[:2], codec, plain[2]], 3, fns, promote.names)
    after_rest = refs()
    bad = [plain[2][:k] for k in range(len(plain[2]))] + [b"", b"\x96", b"\xff" * 40]
    broken = [decode([frame], 0, fns, promote.names) for frame in bad]
    after_broken = refs()
    # consume what is left of the names: the unread first frame and the codec frame
    tasks.own_frame(codec, b.arena)
    return {"before": before, "unknown": unknown, "after_unknown": after_unknown,
            "whole": [(fn is H.noop, args[:4], args[4] is ch) for fn, args, _ in whole],
            "made": [made for _fn, _args, made in whole], "site": site,
            "after_two": after_two, "rest": [(fn is H.noop, args[0]) for fn, args, _ in rest],
            "after_rest": after_rest,
            "after_broken": after_broken, "broken": broken, "native": csp_mp.runtime.native()}


def test_stolen_plain_frames_decode_whole_and_consume_their_names_once() -> None:
    got = csp_mp.run(_decode_case, procs=2)
    if not got["native"]:  # the Python path decodes nothing here: unpack_items does it all
        assert got["unknown"] == [] and got["whole"] == [] and got["rest"] == []
        assert got["after_two"] == got["before"]
        return
    assert got["unknown"] == [] and got["after_unknown"] == got["before"]  # nothing consumed
    assert got["whole"] == [(True, (i, "s", 2.5, None), True) for i in range(2)]
    assert got["made"] == [(got["site"], 40), (got["site"], 41)]  # where go() was called
    assert got["after_two"] == got["before"] - 2  # the two names read, one each
    assert got["rest"] == [(True, 2)] and got["after_rest"] == got["before"] - 3
    # cut or garbage: left to the Python path, having consumed nothing
    assert got["broken"] == [[]] * len(got["broken"])
    assert got["after_broken"] == got["after_rest"]


def _spawner_case() -> dict:
    """A P's compiled go() on its own (deques and callbacks of the test's): what it queued."""
    from collections import deque

    from csp_mp._hub import current_hub
    from csp_mp._shm.native import core

    hub = current_hub()
    b: Any = hub.broker
    frames: deque = deque()
    entries: deque = deque()
    slow: list = []
    flushes: list[int] = []
    sp = core().Spawner(b.runq.encode_plain.__self__, hub, 0, frames, entries,
                        lambda fn, args, kwargs: slow.append((fn, args, kwargs)),
                        lambda: flushes.append(len(frames)), 4)
    ch = Chan(1)
    sp.go(H.noop, (1, ch), {})  # not the callable last given: the slow path decides
    sp.fn_last, sp.entry = H.noop, tasks.pickle_fn(H.noop)
    for i in range(5):
        sp.go(H.noop, (i, "s", ch), {})
    sp.go(H.noop, (1,), {"k": 2})  # kwargs: the slow path
    sp.go(H.noop, ((1, 2),), {})  # a tuple argument needs the codec: the slow path
    sp.seq = 100
    sp.go(H.noop, (7,), {})
    for f in frames:  # consume the channel names the frames counted (nobody runs them)
        tasks.own_frame(f, b.arena)
    return {"seqs": [e[0] for e in entries], "frame_seqs": [tasks.frame_seq(f) for f in frames],
            "args": [e[2][0] for e in entries], "kwargs": [e[3] for e in entries],
            "flushes": flushes, "slow": [(a, k) for _fn, a, k in slow][1:], "seq": sp.seq,
            "first_slow": slow[0][0] is H.noop}


def test_the_compiled_go_queues_frames_and_entries_in_step() -> None:
    if not csp_mp.runtime.native():
        pytest.skip("the compiled core's Spawner (the Python path is place() itself)")
    got = csp_mp.run(_spawner_case, procs=2)
    assert got["first_slow"]
    assert got["seqs"] == got["frame_seqs"] == [1, 2, 3, 4, 5, 101]  # one seq each, in order
    assert got["args"] == [0, 1, 2, 3, 4, 7] and got["kwargs"] == [{}] * 6
    assert got["flushes"] == [4]  # every batch of 4 frames
    assert got["slow"] == [((1,), {"k": 2}), (((1, 2),), {})] and got["seq"] == 101
