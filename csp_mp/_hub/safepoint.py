"""Safe points: where a signal handler may switch a goroutine out (Go's ``isAsyncSafePoint``),
and which code is the user's.

The preemption handler (preempt.py) and drive.py switch a goroutine out from a signal handler,
at whatever bytecode it was running; the Ctrl-C handler (interrupt.py) and blocking reports
(sysmon.py) ask which frames are the runtime's own. ``safe_point`` allows a switch only where:

- the interrupted instruction is one where the interpreter itself checks for signals
  (``RESUME``, a backward jump). Any other instruction means the handler may be running from
  inside a C call (C code calls ``PyErr_CheckSignals``, e.g. a buffered file flushing with its
  lock held), which is not a safe point;
- no frame from the interrupted one down to the goroutine's base belongs to ``threading``,
  ``importlib``, ``logging`` or another module that holds thread-owned locks while running
  Python code (``_UNSAFE_MODULES``), nor is a ``__del__``; and the interrupted code is not the
  runtime's own (a csp_mp frame with no user frame inside it);
- no such frame is inside a ``with`` body, the ``try`` body of a ``try/finally``, or an
  ``except``/``finally`` handler (read from the code object's exception table). This covers
  ``with lock:`` and ``lock.acquire(); try: ... finally: lock.release()`` in user code: another
  goroutine on the same thread taking that lock would deadlock the P.

Limits: a lock taken with a bare ``acquire()`` outside any ``with``/``try`` is not seen; use
``csp_mp.Mutex``, which parks the goroutine rather than the thread. Python callbacks called by C
code (a sort key) can be preempted; C code that keeps a thread-owned lock across such a callback
is not protected. (A Python ``__enter__``/``__exit__`` and a normal-path ``finally`` body are
covered: their caller sits inside the widened range.)

Module state: ``_code_cache`` is a bounded cache of a pure function of code objects;
``_body_calls`` is filled once per wrapper by ``register_body_call`` at import.
"""

from __future__ import annotations

import dis
import os
import sysconfig
from types import CodeType, FrameType
from typing import Any

SAFE, RETRY, UNSAFE = 0, 1, 2

_UNSAFE_MODULES = frozenset({
    "threading", "_threading_local", "importlib", "_frozen_importlib",
    "_frozen_importlib_external", "logging", "queue", "concurrent", "multiprocessing",
    "subprocess", "functools", "weakref", "_weakrefset", "tempfile", "zipfile", "asyncio",
    "selectors", "socketserver", "sched", "greenlet", "gevent", "warnings", "contextlib", "_pyio",
    "site", "linecache",
})
# instructions at which the interpreter itself runs pending signal handlers; 3.11 also fuses a
# COMPARE_OP with the backward jump after it (COMPARE_OP_*_JUMP), which checks with f_lasti
# still on the compare
_BACK_JUMPS = frozenset(op for name, op in dis.opmap.items()
                        if name == "JUMP_BACKWARD" or name.startswith("POP_JUMP_BACKWARD"))
_CHECK_OPS = _BACK_JUMPS | {dis.opmap["RESUME"]}
_COMPARE_OP = dis.opmap["COMPARE_OP"]

_OP = dis.opmap
_PUSH_EXC_INFO = _OP.get("PUSH_EXC_INFO", -1)
_WITH_EXCEPT_START = _OP.get("WITH_EXCEPT_START", -1)
_EXC_MATCH = frozenset(_OP[n] for n in ("CHECK_EXC_MATCH", "CHECK_EG_MATCH") if n in _OP)
_FINALLY_END = frozenset(_OP[n] for n in ("RERAISE", "POP_EXCEPT", "PUSH_EXC_INFO") if n in _OP)
_POP_TOP = _OP["POP_TOP"]
_BEFORE_WITH = frozenset(_OP[n] for n in ("BEFORE_WITH", "BEFORE_ASYNC_WITH") if n in _OP)
_INTRINSIC = _OP.get("CALL_INTRINSIC_1", -1)  # 3.12+: a generator's StopIteration wrapper

USER, STDLIB, RUNTIME, LOCKING = 0, 1, 2, 3  # kinds of code
_STDLIB_DIRS = tuple({os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                      if k in ("stdlib", "platstdlib") and p})
_code_cache: dict[CodeType, tuple[int, tuple[tuple[int, int], ...], frozenset[int]]] = {}
_CACHE_MAX = 8192


def _code_info(code: CodeType,
               module: Any) -> tuple[int, tuple[tuple[int, int], ...], frozenset[int]]:
    """(kind, unsafe byte-offset ranges, check-point offsets) of ``code``, computed once per
    code object."""
    got = _code_cache.get(code)
    if got is not None:
        return got
    kind = _kind_of(code, module)
    if kind == RUNTIME or kind == LOCKING:
        # safe_point never reads their ranges or check points (such a frame is unsafe unless
        # user code runs inside it), so they are not disassembled.
        result: tuple[int, tuple[tuple[int, int], ...], frozenset[int]] = (kind, (), frozenset())
    else:
        instrs = list(dis.get_instructions(code))
        checks = frozenset(
            ins.offset for k, ins in enumerate(instrs)
            if ins.opcode in _CHECK_OPS or (ins.opcode == _COMPARE_OP and k + 1 < len(instrs)
                                            and instrs[k + 1].opcode in _BACK_JUMPS))
        result = (kind, _unsafe_ranges(code, instrs), checks)
    if len(_code_cache) >= _CACHE_MAX:
        _code_cache.clear()
    _code_cache[code] = result
    return result


def code_kind(code: CodeType, module: Any) -> int:
    """RUNTIME, LOCKING, STDLIB or USER: ``_code_info``'s first item, without disassembling
    code it has not seen (the Ctrl-C handler needs only this)."""
    got = _code_cache.get(code)
    return got[0] if got is not None else _kind_of(code, module)


def _kind_of(code: CodeType, module: Any) -> int:
    root = module.partition(".")[0] if isinstance(module, str) else ""
    if root == "csp_mp":
        return RUNTIME
    if not root or root in _UNSAFE_MODULES or code.co_name == "__del__":
        return LOCKING
    if code.co_filename.startswith("<frozen") or _in_stdlib(code.co_filename):
        return STDLIB
    return USER


def _in_stdlib(filename: str) -> bool:
    path = os.path.realpath(filename)
    return path.startswith(_STDLIB_DIRS) and "-packages" + os.sep not in path


def _unsafe_ranges(code: CodeType, instrs: list[dis.Instruction]) -> tuple[tuple[int, int], ...]:
    """Byte-offset ranges of ``code`` where a preemption could split a critical region."""
    parse = getattr(dis, "_parse_exception_table", None)
    entries = parse(code) if parse is not None else ()
    ranges: list[tuple[int, int]] = []
    if entries:
        ops = [i.opcode for i in instrs]
        index = {ins.offset: k for k, ins in enumerate(instrs)}
        for e in entries:
            k = index.get(e.target)
            if k is None:
                ranges.append((e.start, e.end))
                continue
            op = ops[k]
            if op == _INTRINSIC:
                continue
            if op != _PUSH_EXC_INFO:
                ranges.append((e.start, e.end))  # handler code (except, finally, with exit)
            elif _protects_finally(ops, k + 1):
                # A with body or a try/finally body. The compiler places the normal-path exit
                # (``__exit__(None, None, None)``, the finally body) between the body and the
                # handler, so the range runs up to the handler; it starts at BEFORE_WITH, so that
                # a Python ``__enter__`` is covered once it has returned from taking a lock.
                start = e.start
                j = index.get(start)
                if j is not None and j > 0 and ops[j - 1] in _BEFORE_WITH:
                    start = instrs[j - 1].offset
                ranges.append((start, max(e.end, e.target)))
    return tuple(ranges)


def _protects_finally(ops: list[int], k: int) -> bool:
    """Whether the handler whose code starts at ``ops[k]`` (after PUSH_EXC_INFO) is a ``with``
    exit or a ``finally`` (True), rather than ``except`` clauses (False)."""
    if k >= len(ops):
        return True
    if ops[k] == _WITH_EXCEPT_START:
        return True
    if ops[k] == _POP_TOP:  # bare ``except:``
        return False
    for op in ops[k:]:
        if op in _EXC_MATCH:
            return False
        if op in _FINALLY_END:
            return True
    return True


# code object -> the lines where a runtime wrapper calls the user's callable (the goroutine body
# runner, ``WaitGroup.go``, errgroup, ``Once.do``). A runtime frame is transparent to both the
# preemption and the Ctrl-C handler only on those lines: anywhere else, user code running inside
# it (a trace function, a ``__reduce__`` the codec calls) interrupts the runtime mid-update.
_body_calls: dict[CodeType, frozenset[int]] = {}


def register_body_call(fn: Any) -> None:
    """Note that ``fn`` runs user callables: its lines that call ``f(*args, **kwargs)`` or load
    a callable named ``fn`` are the user's."""
    code = fn.__code__
    lines = frozenset(
        ins.positions.lineno for ins in dis.get_instructions(code)
        if ins.positions is not None and ins.positions.lineno is not None and (
            ins.opname == "CALL_FUNCTION_EX"
            or (ins.opname in _LOADS and ins.argval == "fn")))
    if lines:
        _body_calls[code] = lines


_LOADS = frozenset({"LOAD_FAST", "LOAD_DEREF", "LOAD_ATTR", "LOAD_METHOD"})


def safe_point(frame: FrameType | None, base: CodeType | None) -> int:
    """SAFE, RETRY (not at a bytecode check point) or UNSAFE (a frame forbids it) for a switch
    at ``frame``, walking outwards until the frame running ``base`` (the goroutine's entry).

    A csp_mp frame forbids it unless a user frame runs inside it *and* it is on one of its
    registered body-call lines (``register_body_call``): the runtime's wrappers hold nothing
    while the user's callable runs. Anywhere else, a user frame inside runtime code is a
    callback (a trace function, a ``__reduce__``) called while the runtime is mid-update.
    """
    f = frame
    inside_user = False
    while f is not None:
        code = f.f_code
        if code is base:
            # the worker loop is the runtime's own too: a user frame above it is the
            # goroutine's body only on a body-call line; from any other line it is a callback
            # (a trace function) run between two steps of the loop, e.g. with this worker
            # already back in the hub's pool
            lines = _body_calls.get(code)
            if lines is not None and (not inside_user or f.f_lineno not in lines):
                return UNSAFE
            break
        kind, ranges, _ = _code_info(code, f.f_globals.get("__name__"))
        if kind == LOCKING:
            return UNSAFE
        if kind == RUNTIME:
            if not inside_user:
                return UNSAFE
            lines = _body_calls.get(code)
            if lines is None or f.f_lineno not in lines:
                return UNSAFE
        else:
            if kind == USER:
                inside_user = True
            if ranges:
                lasti = f.f_lasti
                for start, end in ranges:
                    if start <= lasti < end:
                        return UNSAFE
        f = f.f_back
    if frame is None or frame.f_lasti not in _code_info(
            frame.f_code, frame.f_globals.get("__name__"))[2]:
        return RETRY
    return SAFE


__all__ = ["LOCKING", "RETRY", "RUNTIME", "SAFE", "STDLIB", "UNSAFE", "USER", "code_kind",
           "register_body_call", "safe_point"]
