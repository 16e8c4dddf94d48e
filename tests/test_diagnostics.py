"""What a user reads when something goes wrong, on one P and on two: remote tracebacks with the
user's file, line and function; warnings located at the user's line; diagnostics that never fail
the program; values that cannot cross a process refused by name.

Programs run in child processes and their printed output is checked.
"""

from __future__ import annotations

import re
import warnings

import pytest
from proc_helpers import GO_ON_DEFS, line_of, run_program

from csp_mp import BlockingWarning, Chan, MigrationWarning, _tb

# the goroutine that raised: job itself on one P, the probe that ran it on another
GOROUTINE = r"goroutine \d+ \(__main__\.(?:job|_probe)\)"
PROCS = pytest.mark.parametrize("procs", [1, 2], ids=["procs1", "procs2"])

PANIC_PROG = GO_ON_DEFS + '''
import os, sys, traceback
import csp_mp

def leaf(d):
    return d["nope"]

def job(n):
    print("JOB", csp_mp.runtime.current_p(), os.getpid(), flush=True)
    leaf({})

def main(procs):
    go_on(procs - 1, job, 1)
    csp_mp.Chan().recv()

procs = int(sys.argv[1])
if sys.argv[2] == "catch":
    try:
        csp_mp.run(main, procs, procs=procs)
    except csp_mp.Panic as e:
        print("GOROUTINE", e.goroutine)
        print("WHERE", e.p, e.pid)
        traceback.print_exception(e, file=sys.stdout)
else:
    csp_mp.run(main, procs, procs=procs)
'''


def _frame_re(path: str, line: int, name: str) -> str:
    return rf'File "{re.escape(path)}", line {line}, in {name}\n'


def _assert_remote_frames(text: str, path: str, prog: str) -> None:
    assert "<dynamic-code>" not in text
    leaf = line_of(prog, 'return d["nope"]')
    job = line_of(prog, "leaf({})")
    assert re.search(_frame_re(path, job, "job") + r'\s+leaf\(\{\}\)\n', text), text
    assert re.search(_frame_re(path, leaf, "leaf") + r'\s+return d\["nope"\]\n', text), text
    assert text.index(", in job") < text.index(", in leaf") < text.index("KeyError: 'nope'")


@PROCS
def test_uncaught_panic_prints_the_goroutine_frames(procs: int, tmp_path) -> None:
    path = str(tmp_path / "job.py")
    r = run_program(path, PANIC_PROG, str(procs), "raise")
    assert r.returncode == 1
    _assert_remote_frames(r.stderr, path, PANIC_PROG)
    p, pid = re.search(r"^JOB (\d+) (\d+)$", r.stdout, re.M).groups()  # type: ignore[union-attr]
    assert re.search(rf"csp_mp\.Panic: panic in {GOROUTINE} on P{p} \(pid {pid}\): KeyError",
                     r.stderr), r.stderr


@PROCS
def test_print_exception_of_a_panic_shows_frames_and_goroutine(procs: int, tmp_path) -> None:
    path = str(tmp_path / "job.py")
    r = run_program(path, PANIC_PROG, str(procs), "catch")
    assert r.returncode == 0, r.stderr
    _assert_remote_frames(r.stdout, path, PANIC_PROG)
    assert re.search(rf"^GOROUTINE {GOROUTINE}$", r.stdout, re.M), r.stdout
    p, pid = re.search(r"^JOB (\d+) (\d+)$", r.stdout, re.M).groups()  # type: ignore[union-attr]
    assert re.search(rf"^WHERE {p} {pid}$", r.stdout, re.M), r.stdout  # the P and pid it ran on


ERRGROUP_PROG = '''
import sys, traceback
import csp_mp
from csp_mp import errgroup

def leaf(d):
    return d["nope"]

def job(p):
    if csp_mp.runtime.current_p() == p:
        leaf({})

def main(procs):
    while True:  # until one of the group's goroutines ran on the last P and failed there
        g = errgroup.Group()
        for _ in range(16):
            g.go(job, procs - 1)
        try:
            g.wait()
        except KeyError as e:
            traceback.print_exception(e, file=sys.stdout)
            return

csp_mp.run(main, int(sys.argv[1]), procs=int(sys.argv[1]))
'''


@PROCS
def test_errgroup_wait_reraises_with_the_goroutine_frames(procs: int, tmp_path) -> None:
    path = str(tmp_path / "job.py")
    r = run_program(path, ERRGROUP_PROG, str(procs))
    assert r.returncode == 0, r.stderr
    _assert_remote_frames(r.stdout, path, ERRGROUP_PROG)
    assert "raise self._first" in r.stdout  # where wait() re-raised it, then where it began


def test_remote_frames_survive_a_second_crossing() -> None:
    err = KeyError("k")
    err.__traceback__ = _tb.synthesize([("/nowhere/a.py", 3, "outer"), ("/nowhere/b.py", 9, "f")])
    _tb.mark(err)
    import pickle

    back = pickle.loads(pickle.dumps(err))
    _tb.restore(back)
    import traceback

    text = "".join(traceback.format_exception(back))
    assert 'File "/nowhere/a.py", line 3, in outer' in text
    assert 'File "/nowhere/b.py", line 9, in f' in text
    assert "_csp_mp_frames" not in vars(back)


# ---------------------------------------------------------------- BlockingWarning

BLOCKING_PROG = GO_ON_DEFS + '''
import sys, time
import csp_mp

def nap(done):
    time.sleep(0.4)
    done.send(None)

def main(procs):
    done = csp_mp.Chan()
    go_on(procs - 1, nap, done)
    done.recv()
    print("finished")

csp_mp.run(main, int(sys.argv[1]), procs=int(sys.argv[1]))
'''


@PROCS
@pytest.mark.parametrize("how", ["c", "stdin", "file"])
def test_blocking_warning_names_the_user_line_and_never_fails(procs: int, how: str,
                                                               tmp_path) -> None:
    path = str(tmp_path / "nap.py") if how == "file" else None
    r = run_program(path, BLOCKING_PROG, str(procs), stdin=how == "stdin")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "finished"
    assert "ImportError" not in r.stderr and "Panic" not in r.stderr
    where = {"c": "<string>", "stdin": "<stdin>", "file": path}[how]
    line = line_of(BLOCKING_PROG, "time.sleep(0.4)")
    assert f"{where}:{line}: BlockingWarning: goroutine" in r.stderr, r.stderr
    if how == "file":  # the call's text needs the source
        assert "in a call to time.sleep" in r.stderr
    assert "<dynamic-code>" not in r.stderr


def test_a_failing_warning_machinery_is_swallowed(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("stderr is gone")

    monkeypatch.setattr(warnings, "showwarning", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = broken
        _tb.warn_quietly(BlockingWarning("x"), "<string>", 3, {"__name__": "__main__"})
        _tb.warn_quietly(MigrationWarning("y"), "/nowhere.py", 5, None)


def test_a_warning_filter_error_still_raises() -> None:
    w = BlockingWarning("as error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BlockingWarning) as info:
            _tb.warn_quietly(w, "<string>", 3, {"__name__": "__main__",
                                                "__loader__": object()})
    assert info.value is w


# ---------------------------------------------------------------- MigrationWarning

MIGRATION_PROG = '''
import sys, warnings
import csp_mp
from csp_mp import Chan, go, runtime

RESULTS = []

def collect(out):
    RESULTS.append(runtime.current_p())
    out.send(runtime.current_p())

def main(procs):
    out = Chan(16)
    seen = []

    def closure():
        seen.append(1)
        out.send(runtime.current_p())

    for fn in (collect, closure):
        while True:  # until one ran on the last P
            for _ in range(16):
                go(fn, out) if fn is collect else go(closure)
            if any([out.recv() == procs - 1 for _ in range(16)]):
                break
    print("done")

warnings.simplefilter("always", csp_mp.MigrationWarning)
csp_mp.run(main, int(sys.argv[1]), procs=int(sys.argv[1]))
'''


@PROCS
def test_migration_warning_names_the_go_line_and_covers_module_globals(procs: int,
                                                                        tmp_path) -> None:
    path = str(tmp_path / "mig.py")
    r = run_program(path, MIGRATION_PROG, str(procs))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["done"]
    warned = [ln for ln in r.stderr.splitlines() if "MigrationWarning" in ln]
    if procs == 1:
        assert warned == []  # nothing migrates, nothing is a copy
        return
    line = line_of(MIGRATION_PROG, "go(fn, out) if fn is collect")
    assert len(warned) == 2, r.stderr  # once per function
    assert all(w.startswith(f"{path}:{line}: MigrationWarning: ") for w in warned), r.stderr
    assert any("'collect' reads mutable module globals (RESULTS)" in w for w in warned)
    assert any("'main.<locals>.closure' captures mutable state (seen)" in w for w in warned)
    assert "<dynamic-code>" not in r.stderr and "broker.py" not in r.stderr


# ---------------------------------------------------------------- values that cannot cross

UNCROSSABLE_PROG = GO_ON_DEFS + '''
import sys, threading
import csp_mp

def keep(ch, out):
    out.send(type(ch.recv()).__name__)

def main(procs, what):
    value = {"file": lambda: open(sys.argv[0]), "lock": threading.Lock,
             "gen": lambda: (i for i in range(3))}[what]()
    ch, out = csp_mp.Chan(1), csp_mp.Chan(1)
    go_on(procs - 1, keep, ch, out)
    try:
        ch.send((1, value))
    except TypeError as e:
        print("TypeError:", e)
        print("len", len(ch))
        return
    print("sent", out.recv())

csp_mp.run(main, int(sys.argv[1]), sys.argv[2], procs=int(sys.argv[1]))
'''


@PROCS
@pytest.mark.parametrize("what,type_name", [("file", "TextIOWrapper"), ("lock", "lock"),
                                            ("gen", "generator")])
def test_a_value_that_cannot_cross_raises_type_error_naming_it(procs: int, what: str,
                                                               type_name: str,
                                                               tmp_path) -> None:
    path = str(tmp_path / "cross.py")
    r = run_program(path, UNCROSSABLE_PROG, str(procs), what)
    assert r.returncode == 0, r.stderr
    if procs == 1:  # the same P: passed by reference, nothing serialized
        assert r.stdout.strip() == "sent tuple", r.stdout
        return
    first, second = r.stdout.splitlines()
    assert first.startswith("TypeError: cannot send a value of type tuple to another P: "
                            f"it holds a {type_name}; "), first
    assert "go_local()" in first and "Mutex" in first
    assert second == "len 0"  # the channel is unchanged


def test_go_with_an_open_file_argument_names_that_argument(tmp_path) -> None:
    from csp_mp._mp import tasks

    def use(n: int, f: object, ch: object, *, mode: str = "") -> None: ...

    ch = Chan(1)
    with open(tmp_path / "f.txt", "w") as f:
        for args, kwargs, label in (((2, f, ch), {}, "argument 2"),
                                    ((2, 3, ch), {"mode": f}, "keyword argument 'mode'")):
            with pytest.raises(TypeError) as info:
                tasks.pack(1, 0, use, args, kwargs, None)
            msg = str(info.value)  # the user's argument, not the runtime's argument tuple
            fn = "test_go_with_an_open_file_argument_names_that_argument.<locals>.use"
            assert msg.startswith(f"{label} of go({fn}, ...) cannot be sent to another P "
                                  "(TextIOWrapper): "), msg
            assert "an open file belongs to its process" in msg and "go_local()" in msg
            assert "tuple" not in msg
    assert ch.stats().buffered == 0  # the channel named among the arguments was not touched


def test_describing_a_migration_never_fails_go() -> None:
    from csp_mp._mp import migrate_warn

    class Odd:
        __module__ = "__main__"
        __qualname__ = "Odd"

        @property
        def __code__(self):
            raise RuntimeError("no code here")

        def __call__(self) -> None:
            pass

    assert migrate_warn.globals_read(Odd()) == []
    assert migrate_warn.text(Odd(), ["x"], [], []) != ""  # described without the failing part

    class Worse(Odd):
        def __getattribute__(self, name):
            raise RuntimeError(f"no {name} either")

    assert migrate_warn.globals_read(Worse()) == []
    assert migrate_warn.text(Worse(), ["x"], [], []) == ""


def test_migration_warning_text_survives_a_broken_warnings_module(monkeypatch) -> None:
    from csp_mp._mp import migrate_warn

    def broken(*args, **kwargs):
        raise OSError("stderr is gone")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", broken)
        migrate_warn.emit("/nowhere.py\x003\x00a copy")
        migrate_warn.emit("not even the expected shape")


TABLE_PROG = '''
import warnings
import csp_mp
from csp_mp import Chan, go, runtime

TABLE = [Chan(64) for _ in range(2)]  # Go's module-level table of channels: shared handles
BY_NAME = {"a": Chan(64)}
NUMS = [0]

def put(i):
    TABLE[i % 2].send(runtime.current_p())
    BY_NAME["a"].send(0)

def count():
    NUMS.append(1)
    TABLE[0].send(runtime.current_p())

def main():
    chans = [Chan(64), Chan(64)]

    def closure():
        chans[0].send(runtime.current_p())

    for fn, out in ((put, TABLE[0]), (closure, chans[0]), (count, TABLE[0])):
        while True:  # until one ran on P1
            for i in range(16):
                go(fn, 0) if fn is put else go(fn)
            got = [out.recv() for _ in range(16)]
            if fn is put:
                [BY_NAME["a"].recv() for _ in range(16)]
            if 1 in got:
                break
    print("done")

warnings.simplefilter("always", csp_mp.MigrationWarning)
csp_mp.run(main, procs=2)
'''


def test_no_migration_warning_for_tables_of_channels(tmp_path) -> None:
    r = run_program(str(tmp_path / "table.py"), TABLE_PROG)
    assert r.returncode == 0, r.stderr
    warned = [ln for ln in r.stderr.splitlines() if "MigrationWarning" in ln]
    assert len(warned) == 1, r.stderr  # only the list of numbers is a copy
    assert "'count' reads mutable module globals (NUMS)" in warned[0]
