"""The layout contract: one source (csp_mp/_shm/layout.py) for both cores' words and kinds."""

from __future__ import annotations

import pathlib
import re
import runpy

import pytest

from csp_mp._shm import layout as L
from csp_mp._shm import native

C_DIR = pathlib.Path(L.__file__).parent / "c"


def test_the_header_in_the_tree_is_the_one_layout_py_makes() -> None:
    """setup.py writes c/layout.h at build time; the committed copy must not lag behind."""
    made = runpy.run_path(L.__file__)["c_header"]()
    assert (C_DIR / "layout.h").read_text() == made, (
        "csp_mp/_shm/c/layout.h is stale: run `python setup.py build_ext --inplace`")


@pytest.mark.skipif(not native.built(), reason="the compiled core is not built")
def test_the_compiled_core_was_built_from_this_layout() -> None:
    assert native.core().LAYOUT_DIGEST == L.DIGEST
    assert native.core().WREC_BYTES == L.REC_BYTES


def test_the_c_sources_define_no_layout_number_of_their_own() -> None:
    """A word index, magic or kind written again in C could drift from layout.py."""
    names = {k for k, v in vars(L).items() if k.isupper() and type(v) is int}
    for path in C_DIR.glob("*.[ch]"):
        if path.name == "layout.h":
            continue
        text = path.read_text()
        for name in re.findall(r"#define\s+(\w+)", text):
            assert name not in names, f"{path.name} defines {name}, a layout.py name"
        for body in re.findall(r"enum\s*\{([^}]*)\}", text):
            for name in re.findall(r"(\w+)\s*(?:=|,|$)", body):
                assert name not in names, f"{path.name} enumerates {name}, a layout.py name"
        for magic in (L.CHAN_MAGIC, L.RING_MAGIC, L.ARENA_MAGIC, L.CTX_MAGIC, L.BLOCK_MAGIC):
            assert f"{magic:x}" not in text.lower(), f"{path.name} spells a magic of layout.py"


def test_the_python_modules_take_their_constants_from_layout_py() -> None:
    from csp_mp._chan import block, proclayer
    from csp_mp._mp import ctx, tasks, tokens
    from csp_mp._shm import arena, codec, locks, ring_frames

    assert (block._MAGIC, block._W_REFS, block._W_ID, block._W_GROWN, block._REC.size) == (
        L.CHAN_MAGIC, L.W_REFS, L.W_ID, L.W_GROWN, L.REC_BYTES)
    assert (proclayer.K_VALUE, proclayer.K_GRANT) == (L.K_VALUE, L.K_GRANT)
    assert (tokens.T_WAITING, tokens.T_DONE) == (L.T_WAITING, L.T_DONE)
    assert (ctx.P_OWES, ctx.P_GFLOOR, ctx.P_SENT, ctx.P_STRIDE, ctx.M_WAKE) == (
        L.P_OWES, L.P_GFLOOR, L.P_SENT, L.P_WORDS, L.M_WAKE)
    assert ctx.block_bytes(2) == (L.G_WORDS + 2 * L.P_WORDS + 2 * ctx.TOKENS) * 8
    assert tasks._CHAN_EXT == L.CHAN_EXT
    assert codec._TUPLE == bytes((L.CODEC_EXT, L.CODEC_TUPLE))
    assert (ring_frames._MAGIC, ring_frames.HEADER) == (L.RING_MAGIC, L.RING_HEADER)
    assert (locks.TAKEOVERS_WORD, locks.STATE_LOCKS_WORD) == (L.AW_TAKEOVERS, L.AW_STATE_LOCKS)
    assert (arena._MAGIC, arena.NCLASS, arena.BLOCK_HEADER) == (
        L.ARENA_MAGIC, L.NCLASS, L.BLOCK_HEADER)



# No C file reads or sets an attribute of csp_mp's own objects, nor calls a method by name:
# they get offsets, ints and callables at construction. The only names looked up are a builtin
# container's own methods (list.append, deque.append and deque.pop; the constructors check the
# containers' exact types), bound once at construction.
_BUILTIN_ATTRS = {"append", "pop"}


def test_c_reads_no_attribute_of_a_python_object() -> None:
    for path in sorted(C_DIR.glob("*.[ch]")):
        text = path.read_text()
        by_object = re.findall(r"\b(?:_?PyObject_(?:GetAttr|SetAttr|DelAttr|HasAttr|"
                               r"GetOptionalAttr|LookupAttr|CallMethod\w*|VectorcallMethod)|"
                               r"_PyObject_GetAttrId|_Py_ID)\(", text)
        # (a method called by name is looked up on every call, on whatever object is there)
        assert not by_object, (
            f"{path.name} looks attributes or methods up by name on each call: {by_object}")
        names = set(re.findall(r'(?:InternFromString|AttrString)\([^"]*"(\w+)"\)', text))
        assert names <= _BUILTIN_ATTRS, (
            f"{path.name} reads {sorted(names - _BUILTIN_ATTRS)} by name: pass it in "
            "explicitly (an int, an offset, or a callable given at construction)")


@pytest.mark.skipif(not (native.built() and native.enabled()),
                    reason="the compiled core is not built, or not used")
def test_a_frame_names_a_shared_channel_through_its_handle_ref() -> None:
    """task.c reads no attribute of a Chan: an untyped channel this P holds a handle on is named
    by its HandleRef's offset (chan_ext is not asked), and the frame counts the name, which the
    HandleRef's drop() takes back; a local or typed channel is left to chan_ext."""
    from mp_helpers import run

    from csp_mp import Chan
    from csp_mp._mp import promote
    from csp_mp._proc import proc
    from csp_mp._shm import OOB_MIN

    def main() -> tuple:
        broker = proc.broker
        ch: Chan = Chan(1)
        off = promote.promote_chan_state(ch).off
        asked: list = []
        enc = native.core().TaskEncoder(Chan, lambda c: asked.append(c), OOB_MIN,
                                        broker.arena.core)
        entry = (b"digest", b"fn", "")

        def refs() -> int:
            return int(broker.arena.add_word(off + L.W_REFS * 8, 0))

        before = refs()
        frame = enc.encode(1, 0, entry, (ch,))
        counted = refs() - before
        dropped = broker.chans[off].drop() - refs()
        local, typed = Chan(1), Chan[int](1)
        promote.promote_chan_state(typed)
        left = [enc.encode(2, 0, entry, (local,)), enc.encode(3, 0, entry, (typed,))]
        return (off.to_bytes(8, "little") in frame, counted, dropped, refs() == before,
                asked == [local, typed], left)

    assert run(main, 2) == (True, 1, 1, True, True, [None, None])


def test_a_stopping_hub_hands_go_to_spawn_which_starts_nothing() -> None:
    """No placer reads ``hub.stopping`` (the compiled core's Spawner cannot): once the hub
    stops, ``go`` is its own spawn, which starts nothing, so a goroutine unwound by the stop
    that calls go() queues no frame."""
    from mp_helpers import run

    from csp_mp import Chan, go, go_local, runtime
    from csp_mp._proc import proc

    seen: list[tuple] = []

    def main() -> None:
        hub, broker = proc.hub, proc.broker

        def lingering() -> None:
            try:
                Chan().recv()  # waits until the stop unwinds it
            finally:
                before = broker.seq
                go(print, "never printed")
                seen.append((hub.stopping, hub.go == hub._go_here, broker.seq - before))

        go_local(lingering)
        runtime.gosched()

    run(main, 2)
    assert seen == [(True, True, 0)]
