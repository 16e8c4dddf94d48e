"""The start-up measurements of the ``parallel`` family: from a program's start to its first
goroutine running on P1, and what a user's script pays for it, ``import csp_mp`` included.

- ``child_startup`` (one of the family's children): seconds from calling ``run(procs=2)`` to a
  goroutine running on P1, the modules ``run`` loads imported beforehand; its peer,
  ``ppe_startup``: ``ProcessPoolExecutor(2)`` (fork) created to its first task running.
- ``script_startup_rows``: each side a plain script in a fresh interpreter, bytecode caches read
  and written, timed from its first statement: ``import csp_mp`` against
  ``import concurrent.futures.process``, and a script's ``import csp_mp`` + ``run(main, procs=2)``
  to a goroutine on P1 against ``ProcessPoolExecutor(2, fork)`` to its first task.

``python -m benchmarks.bench_parallel --startup`` prints the script rows alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from ._common import at_most, child_env, json_child, median, on_path, row
from .parallel_cross import place_on

FAMILY = "parallel"  # the family whose rows these are
STARTUP_VS_PPE_BAR = 4.0  # run(procs=2) to P1 <= 4x ProcessPoolExecutor(2, fork) to 1st task
# issue 23's start-up bars, as a user's script pays them (fresh interpreter, cached bytecode)
IMPORT_VS_CFP_BAR = 2.0  # import csp_mp <= 2x import concurrent.futures.process
SCRIPT_START_VS_PPE_BAR = 4.0  # script to first goroutine on P1 <= 4x PPE(2, fork) to 1st task


def import_multi_p_layer() -> None:
    """Import what ``run(procs > 1)`` imports on first use, before the clock starts: the peers'
    modules (multiprocessing, concurrent.futures) are imported before theirs starts too, and a
    fresh interpreter with no bytecode cache spends 50-90 ms compiling these here."""
    import csp_mp._mp  # noqa: F401


def child_startup(procs: int, deadline_s: float) -> dict:
    """Seconds from calling ``run(procs=procs)`` to a goroutine running on P1."""
    import csp_mp

    import_multi_p_layer()

    t0 = time.monotonic()
    got = csp_mp.run(place_on, 1, None, deadline_s, procs=procs)
    if got is None:
        return {"error": f"no goroutine ran on P1 within {deadline_s:g} s"}
    return {"seconds": got - t0}


def ppe_startup() -> float:
    """Seconds from creating ``ProcessPoolExecutor(2)`` (fork) to its first task running."""
    fork = mp.get_context("fork")
    t0 = time.monotonic()
    with cf.ProcessPoolExecutor(2, mp_context=fork) as ex:
        t1 = ex.submit(time.monotonic).result()
    return t1 - t0


# ================================================ start-up as a script pays it (fresh interpreters)

# Each script prints one JSON line: the seconds from its own first statement (the clock starts
# before the imports, after the interpreter's start-up, which is the same for both sides).
IMPORT_SCRIPT = """\
import json, time
t0 = time.perf_counter()
import {module}
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

CSP_START_SCRIPT = """\
import time
t0 = time.monotonic()
import csp_mp
from csp_mp import runtime


def probe(out):
    out.send((runtime.current_p(), time.monotonic()))


def main():
    out = csp_mp.Chan(64)
    end = time.monotonic() + {deadline}
    while time.monotonic() < end:
        for _ in range(4):
            csp_mp.go(probe, out)
        for _ in range(4):
            p, t = out.recv()
            if p == 1:
                return t
    return None


t1 = csp_mp.run(main, procs=2)
import json
if t1 is None:
    print(json.dumps({{"error": "no goroutine ran on P1 within {deadline} s"}}))
else:
    print(json.dumps({{"seconds": t1 - t0, "native": runtime.native()}}))
"""

PPE_START_SCRIPT = """\
import time
t0 = time.monotonic()
import concurrent.futures
import multiprocessing

fork = multiprocessing.get_context("fork")
with concurrent.futures.ProcessPoolExecutor(2, mp_context=fork) as ex:
    t1 = ex.submit(time.monotonic).result()
import json
print(json.dumps({"seconds": t1 - t0}))
"""


def in_script(source: str, timeout: float, path: str | None = None) -> dict:
    """Run ``source`` as a user's plain script in a fresh interpreter, bytecode caches read and
    written (``PYTHONDONTWRITEBYTECODE`` dropped); the JSON object its last line prints, or
    ``{"error"}``. ``path``: the ``CSP_MP_NATIVE`` the script's csp_mp runs with."""
    _, env = child_env(path)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="csp_mp-bench-") as d:
        script = Path(d) / "script.py"
        script.write_text(source)
        return json_child([sys.executable, str(script)], timeout, path, env=env, cwd=d)


def _seconds(results: list[dict]) -> list[float]:
    return [r["seconds"] for r in results if "seconds" in r]


def _errors(results: list[dict]) -> str:
    return "; ".join(dict.fromkeys(r["error"] for r in results if "error" in r))


def script_startup_rows(paths: list[str], reps: int, deadline: float,
                         timeout: float) -> list[dict]:
    """``import csp_mp`` against ``import concurrent.futures.process``, and a script's
    ``import csp_mp; run(main, procs=2)`` to a goroutine on P1 against ``ProcessPoolExecutor(2)``
    (fork) to its first task; each run a fresh interpreter, the two sides interleaved."""
    imp_csp = IMPORT_SCRIPT.format(module="csp_mp")
    imp_cfp = IMPORT_SCRIPT.format(module="concurrent.futures.process")
    start_csp = CSP_START_SCRIPT.format(deadline=deadline)
    for source in (imp_csp, imp_cfp, PPE_START_SCRIPT):  # untimed: the bytecode caches written
        in_script(source, timeout)
    for path in paths:
        in_script(start_csp, timeout, path)
    got: dict[tuple, list[dict]] = {}
    for _ in range(reps):
        for path in paths:
            got.setdefault(("import", path), []).append(in_script(imp_csp, timeout, path))
        got.setdefault(("import", "peer"), []).append(in_script(imp_cfp, timeout))
        for path in paths:
            got.setdefault(("start", path), []).append(in_script(start_csp, timeout, path))
        got.setdefault(("start", "peer"), []).append(in_script(PPE_START_SCRIPT, timeout))
    out = []
    for key, figure, baseline, bar in (
            ("import", "import csp_mp (fresh interpreter, cached bytecode)",
             "import concurrent.futures.process", IMPORT_VS_CFP_BAR),
            ("start", "script: import csp_mp + run(procs=2) to first goroutine on P1",
             "script: import + ProcessPoolExecutor(2, fork) to first task",
             SCRIPT_START_VS_PPE_BAR)):
        peer = got[(key, "peer")]
        base = median(_seconds(peer))
        for path in paths:
            mine = got[(key, path)]
            v = median(_seconds(mine))
            r = row(FAMILY, "import" if key == "import" else "script_startup",
                    on_path(figure, path), "s", v, baseline=baseline, baseline_value=base,
                    higher_is_better=False, bar=f"<= {bar:g}x the peer",
                    met=at_most(v / base, bar) if v and base else None,
                    note=_errors(mine + peer), repeats=len(_seconds(mine)))
            r["path"] = path
            out.append(r)
    return out
