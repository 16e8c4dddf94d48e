"""The runtime object (``csp_mp/_proc.py``): the only module-level state, set by a runtime,
cleared by its stop, reset by a fork; and importing ``csp_mp._mp`` changes nothing below it."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import csp_mp
from csp_mp import Chan, run
from csp_mp._hub import current_hub
from csp_mp._proc import FNS_MAX, proc

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "csp_mp"

# ------------------------------------------------------------------ no other module-level state

#: Module-level names bound to something mutable that are not per-process runtime state, by
#: file, with the reason. Anything else mutable at module level fails the test below.
ALLOWED: dict[tuple[str, str], str] = {
    ("_proc.py", "proc"): "the runtime object itself",
    # constants: tables written once at import and only read after
    ("_mp/ctx.py", "LIVE_KINDS"): "constant",
    ("_mp/ctx.py", "PINNED_KINDS"): "constant",
    ("_mp/tasks.py", "_UINT_BYTES"): "constant",
    ("_chan/block.py", "_NWORD"): "constant",
    ("_hub/drive.py", "_SELECT_CODES"): "constant",
    ("_hub/waits.py", "TABLE"): "constant",
    ("_shm/cloud.py", "_HINT"): "constant",
    ("_testing/faketime.py", "_NOT_BLOCKED"): "constant",
    ("_testing/plugin.py", "_OPTIONS"): "constant",
    ("_shm/ring_batch.py", "_PADS"): "constant",
    ("_context.py", "_BACKGROUND"): "Go's context.Background(): never canceled, holds nothing",
    ("_context.py", "_TODO"): "Go's context.TODO(): never canceled, holds nothing",
    ("_chan/chan.py", "default"): "a stateless marker object",
    ("_chan/chan.py", "nilchan"): "a stateless marker object",
    # caches of pure functions of the code: no fork or runtime can make an entry wrong
    ("_tb.py", "_stubs"): "code stubs by (file, function)",
    ("_hub/drive.py", "_sleep_calls"): "analysis of a code object",
    ("_hub/safepoint.py", "_code_cache"): "analysis of a code object",
    ("_hub/safepoint.py", "_body_calls"): "analysis of a code object",
    ("_hub/g.py", "_cache"): "where go() calls are, by code object and offset",
    ("_mp/arrays.py", "_ARRAY_CLASS"): "the ndarray subclass, made from the code once",
    ("_shm/cloud.py", "_table"): "cloudpickle's reducers by type, filled at import",
}

_MUTABLE_CALLS = {"dict", "list", "set", "bytearray", "WeakKeyDictionary", "WeakValueDictionary",
                  "WeakSet", "OrderedDict", "deque", "defaultdict", "local", "count", "Lock",
                  "RLock", "Event", "Condition"}


def _mutable_value(value: ast.expr, classes: set[str]) -> bool:
    if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Constant) and value.value is None:
        return True  # a cell rebound later
    if isinstance(value, ast.Call):
        name = ast.unparse(value.func).split(".")[-1]
        return name in _MUTABLE_CALLS or name in classes
    return False


def _module_state() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        tree = ast.parse(path.read_text())
        classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            for target in targets:
                name = ast.unparse(target)
                if name != "__all__" and _mutable_value(value, classes):
                    found.append((rel, name, node.lineno))
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.extend((rel, f"global {name}", node.lineno) for name in node.names)
    return found


def test_no_module_level_mutable_state_outside_the_runtime_object() -> None:
    stray = [f"csp_mp/{rel}:{line}: {name}" for rel, name, line in _module_state()
             if (rel, name) not in ALLOWED]
    assert not stray, "module-level state outside csp_mp._proc.proc:\n" + "\n".join(stray)


def test_the_allow_list_names_only_what_exists() -> None:
    present = {(rel, name) for rel, name, _line in _module_state()}
    assert set(ALLOWED) <= present, sorted(set(ALLOWED) - present)


# ------------------------------------------------------------------ importing _mp changes nothing

_PICKLE_PROGRAM = """
import pickle, sys
import csp_mp
from csp_mp._proc import proc
from csp_mp._shm import codec

def attempt(obj):
    try:
        return ["ok", pickle.dumps(obj).hex()]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]

def encoded(obj):
    try:
        return ["ok", codec.encode((1, obj)).hex()]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]

ch, n, mu = csp_mp.Chan(), csp_mp.atomic.Int64(), csp_mp.Mutex()
assert "csp_mp._mp" not in sys.modules
before = [attempt(ch), attempt(n), attempt(mu), encoded(ch), proc.promote_chan]
import csp_mp._mp
after = [attempt(ch), attempt(n), attempt(mu), encoded(ch), proc.promote_chan]
print(repr(before))
print(repr(after))
"""


def test_importing_the_process_layer_does_not_change_how_a_chan_pickles() -> None:
    out = subprocess.run([sys.executable, "-c", _PICKLE_PROGRAM], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    before, after = out
    assert before == after
    assert "a csp_mp.Chan can only be pickled inside a multi-process runtime" in before
    assert before.endswith("None]")  # no promoter registered


def test_a_multi_p_runtime_registers_the_promoters_and_its_stop_removes_them() -> None:
    def main() -> tuple[bool, bool, bool]:
        ch: Chan = Chan(1)
        pickle.dumps(ch)  # promotes it: the runtime's promoter
        return (proc.promote_chan is not None, proc.broker is not None, proc.hub is not None)

    assert run(main, procs=2) == (True, True, True)
    assert (proc.promote_chan, proc.promote_int64, proc.promote_sema) == (None, None, None)
    assert (proc.hub, proc.broker, proc.ctx, proc.runtime) == (None, None, None, None)
    assert not proc.names and not proc.fns and not proc.recent and not proc.closures
    with pytest.raises(TypeError, match="only be pickled inside a multi-process runtime"):
        pickle.dumps(Chan())


def test_the_module_names_of_its_containers_stay_the_runtime_objects() -> None:
    from csp_mp._mp import promote, tasks

    def main() -> None:
        csp_mp.go(abs, -1)

    run(main, procs=2)
    assert promote.names is proc.names and tasks.fns is proc.fns
    assert tasks._recent is proc.recent


# ------------------------------------------------------------------ bounded caches


def test_the_cache_of_unpickled_callables_is_bounded() -> None:
    from csp_mp._mp import tasks

    data = pickle.dumps(abs)
    try:
        for i in range(FNS_MAX + 10):
            fn = tasks.unpack_items((0, 0, i.to_bytes(16, "little"), data, [], ""), None)[0]
            assert fn is abs
        assert len(proc.fns) == FNS_MAX
        assert (0).to_bytes(16, "little") not in proc.fns  # the oldest went first
        assert (FNS_MAX + 9).to_bytes(16, "little") in proc.fns
    finally:
        proc.fns.clear()


# ------------------------------------------------------------------ a fork resets it


def _in_forked_child(look: Callable[[], tuple]) -> str:
    """``repr(look())`` as a child forked here sees it (the child leaves at once)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, repr(look()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got = f.read()
    os.waitpid(pid, 0)
    return got


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_gives_the_child_a_fresh_runtime_object() -> None:
    def main() -> str:
        return _in_forked_child(lambda: (proc.pid == os.getpid(), proc.hub is None,
                                         proc.broker is None, proc.promote_chan is None,
                                         not proc.tasks))

    got = run(main, procs=2)
    assert got == repr((True, True, True, True, True))
    assert proc.pid == os.getpid()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_has_no_hub_behind_its_inherited_signal_handlers() -> None:
    """The child inherits the handlers the parent's hub installed (signal dispositions survive a
    fork), but not that hub: they do nothing until a hub of its own installs them."""
    def main() -> tuple[bool, str]:
        hub = current_hub()
        got = _in_forked_child(lambda: (
            proc.preempt_handler.hub, proc.preempt_handler.deciding, proc.slice_clock.hub,
            proc.slice_clock.tick, proc.sigint_handler.hub, proc.sigint_handler.retrier,
            proc.driving.kicked, proc.driving.waiter))
        return proc.preempt_handler.hub is hub, got

    installed, got = run(main, procs=1)
    assert installed  # the parent's hub had the preemption handler (pytest's main thread)
    assert got == repr((None, False, None, -1, None, None, False, None))
    assert proc.preempt_handler.hub is None and proc.slice_clock.hub is None
    assert proc.sigint_handler.hub is None


def test_sysmon_settings_are_the_runtime_objects() -> None:
    from csp_mp._hub import sysmon

    assert sysmon.settings is proc.sysmon_settings


def test_a_stop_keeps_what_outlives_runtimes() -> None:
    code = textwrap.dedent("""
        import csp_mp
        from csp_mp._proc import proc
        csp_mp.patch_blocking()
        csp_mp.run(lambda: None)
        print(bool(proc.patched), proc.start_implicit is not None)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["True", "True"]
