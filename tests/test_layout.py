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



# Attributes of csp_mp's own objects that C still reads or sets by name (handles.c's state and
# Chan fields, task.c's channel state and hub.stopping): the list may only shrink. chan.c and
# wake.c read none: they get offsets, ints and callables at construction.
_C_ATTRS_LEFT = {
    "handles.c": {"off", "drop_name", "key", "broker", "_st", "_type", "_check", "cap", "uid",
                  "codec"},
    "task.c": {"_type", "_st", "shared", "off", "stopping"},
}
_BUILTIN_ATTRS = {"append"}  # a list's own method


def test_c_reads_no_new_attribute_of_a_python_object() -> None:
    for path in sorted(C_DIR.glob("*.c")):
        text = path.read_text()
        names = set(re.findall(r'(?:InternFromString|GetAttrString|SetAttrString)\("(\w+)"\)',
                               text))
        assert not re.search(r"_PyObject_GetAttrId|_Py_ID\(", text), path.name
        left = _C_ATTRS_LEFT.get(path.name, set())
        assert names - _BUILTIN_ATTRS <= left, (
            f"{path.name} reads {sorted(names - _BUILTIN_ATTRS - left)} by name: pass it in "
            "explicitly (an int, an offset, or a callable given at construction)")
