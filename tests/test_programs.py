"""Whole programs in a fresh interpreter, one P: how they start and how they end.

Each program runs in a child process (so the implicit runtime's exit path and signals are real);
the autouse fixture checks nothing outlives the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from proc_helpers import catching_interrupt, check_clean_end, interrupt_program

PROGRAM = textwrap.dedent("""
    import csp_mp
    from csp_mp import Chan, go

    def work(n, out):
        out.send(n * n)

    def main():
        out = Chan(10)
        for n in range(10):
            go(work, n, out)
        return sum(out.recv() for _ in range(10))

    print(csp_mp.run(main, procs=1))
""")


def _python(*args: str, stdin: str | None = None, timeout: float = 30) -> str:
    done = subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_program_with_python_c() -> None:
    assert _python("-c", PROGRAM).strip() == "285"


def test_program_piped_on_stdin() -> None:
    assert _python("-", stdin=PROGRAM).strip() == "285"


def test_script_with_main_guard(tmp_path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM.replace("print(csp_mp.run", "if __name__ == '__main__':\n    print("
                                      "csp_mp.run"))
    assert _python(str(script)).strip() == "285"


def test_implicit_runtime_stops_at_interpreter_exit() -> None:
    prog = textwrap.dedent("""
        from csp_mp import Chan, go, sleep
        c = Chan()
        go(lambda: c.send("hello"))
        print(c.recv())
        go(sleep, 60)          # still sleeping when the interpreter exits
        go(Chan().recv)        # parked forever
        print("bye")
    """)
    assert _python("-c", prog).split() == ["hello", "bye"]


PARKED = catching_interrupt(textwrap.dedent("""
    import csp_mp
    def main():
        print("ready", flush=True)
        csp_mp.sleep(60)
"""), "csp_mp.run(main, procs=1)")

BUSY = catching_interrupt(textwrap.dedent("""
    import csp_mp
    from csp_mp import go, runtime
    def spin():
        while True:
            runtime.gosched()
    def main():
        go(spin)
        print("ready", flush=True)
        while True:
            runtime.gosched()
"""), "csp_mp.run(main, procs=1)")


@pytest.mark.parametrize("prog", [PARKED, BUSY], ids=["parked", "busy"])
def test_sigint_raises_keyboard_interrupt_from_run(prog: str) -> None:
    check_clean_end(*interrupt_program(prog))


def test_deadlocked_program_fails_with_the_dump() -> None:
    prog = "import csp_mp\ncsp_mp.run(lambda: csp_mp.Chan().recv(), procs=1)\n"
    done = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode != 0
    assert "all goroutines are asleep - deadlock!" in done.stderr
    assert "[chan receive]" in done.stderr
