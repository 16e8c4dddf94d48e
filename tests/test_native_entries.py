"""The compiled core's whole-operation entries of a shared channel: ``ChanOps.send_pair`` and
``recv_pair`` run the fast path and hand the rest to the Python callables given at
construction (``shared_native.py``'s ``_send_more``/``_recv_more``), exactly once, with the
caller's arguments; after a fast send they drop the handles that died (``release``)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from csp_mp._shm import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled core is not built")


def _ops(w: Any, **kw: Any) -> Any:
    from csp_mp._shm.codec import _mdec, _menc, _tdec, decode

    return w.core_mod.ChanOps(w.r, w.chan, _menc, _mdec, _tdec,
                              functools.partial(decode, arena=w.arena), NOVALUE, 1 << 16, None,
                              **kw)


NOVALUE = object()


def test_send_pair_and_recv_pair_finish_here_or_call_the_rest_once() -> None:
    from test_native_fuzz import World

    w = World()  # a channel of capacity 2
    calls: list[tuple] = []
    dead: list = []
    hub = object()
    ops = _ops(w, recv_more=lambda h: calls.append(("recv_more", h)) or ("more", True),
               send_more=lambda v, h: calls.append(("send_more", v, h)), dead=dead,
               release=lambda: calls.append(("release",)) or dead.clear())
    assert ops.recv_pair(hub) == ("more", True)  # empty: the rest runs, with the hub
    assert ops.send_pair((1, "a"), hub) is None
    dead.append("a handle that died")
    assert ops.send_pair(2, hub) is None  # buffered, then the dead handle dropped
    assert ops.send_pair(3, hub) is None  # full: the rest runs with the value and the hub
    assert calls == [("recv_more", hub), ("release",), ("send_more", 3, hub)]
    assert ops.recv_pair(hub) == ((1, "a"), True)
    assert ops.recv_pair(hub) == (2, True)
    assert not dead and len(calls) == 3


def test_an_entry_without_its_rest_and_bad_construction_are_refused() -> None:
    from test_native_fuzz import World

    w = World()
    ops = _ops(w)
    with pytest.raises(TypeError, match="recv_more"):
        ops.recv_pair(None)
    with pytest.raises(TypeError, match="send_more"):
        ops.send_pair(1, None)
    with pytest.raises(TypeError):
        ops.send_pair(1)
    assert ops.send(1) is True and ops.recv() == 1  # the plain fast paths are unchanged
    for bad in (dict(recv_more=1), dict(send_more="x"), dict(dead=[], release=None),
                dict(dead=(), release=print), dict(release=print)):
        with pytest.raises(TypeError, match="callable or None"):
            _ops(w, **bad)


SMALL = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
         -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63, -2**63 - 1, 2**64,
         True, False, None, 1.5, "s", b"b"]
TUPLES = [(), (1, -1, None, True), tuple(range(15)), tuple(range(16)), (2**63, -5),
          (2**64, 1), (1.5, 2), (1, "x"), tuple(SMALL[:15]), (-2**63 - 1,)]


@pytest.mark.parametrize("value", SMALL + TUPLES, ids=repr)
def test_the_core_writes_and_reads_small_values_as_the_codec_does(value: Any) -> None:
    """None, bools, int64-range ints and short tuples of them are encoded and decoded by the
    core itself: byte for byte the codec's (msgspec's) encoding, and back to equal values of
    the same types; every other value goes through msgspec as before."""
    from test_native_fuzz import World

    from csp_mp._shm import codec

    w = World()
    ops = _ops(w)
    items = value if type(value) is tuple else (value,)
    if any(type(x) is int and not -2**63 <= x < 2**64 for x in items):
        assert ops.send(value) is False  # beyond msgpack: the codec pickles it, as before
        return
    assert ops.send(value) is True
    assert ops.recv_data() == codec.encode(value, w.arena)
    assert ops.send(value) is True
    got = ops.recv()
    assert got == value and type(got) is type(value)
    if type(value) is tuple:
        assert [type(x) for x in got] == [type(x) for x in value]
