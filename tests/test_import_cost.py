"""``import csp_mp`` loads what a one-P program needs, and no more.

The multi-P layer (the process layer, the arena, rings and codec, msgspec, cloudpickle), the
executor (``concurrent.futures``), ``subprocess`` and the pytest plugin load on first use. Each
check runs in a fresh interpreter and compares ``sys.modules`` before and after, so a module the
interpreter's own start-up imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Modules `import csp_mp` must leave out, with what first needs them.
HEAVY = {
    "csp_mp._mp": "run(procs > 1), a shared handle",
    "csp_mp._shm.arena": "run(procs > 1)",
    "csp_mp._shm.ring": "run(procs > 1)",
    "csp_mp._shm.codec": "run(procs > 1)",
    "csp_mp._chan.shared": "a channel shared between Ps",
    "csp_mp._futures": "csp_mp.futures",
    "csp_mp._map": "csp_mp.map",
    "csp_mp._patch": "csp_mp.patch_blocking",
    "csp_mp._testing": "csp_mp.testing, the pytest plugin",
    "csp_mp._hub.sysmon": "the first hub that runs",
    "csp_mp.trace": "csp_mp.trace",
    "msgspec": "a typed Chan, the codec",
    "cloudpickle": "the codec, the executor",
    "multiprocessing": "run(procs > 1)",
    "concurrent.futures": "csp_mp.futures",
    "subprocess": "csp_mp.patch_blocking",
    "ctypes": "sysmon's preemption",
    "mmap": "the arena",
    "pickle": "the codec",
    "inspect": "msgspec",
    "pathlib": "nothing at run time",
    "typing_extensions": "msgspec",
}

#: What a one-P program (`run(main, procs=1)`) must not load either.
MULTI_P = [m for m in HEAVY if m not in {"csp_mp._hub.sysmon", "ctypes", "inspect"}]


def _new_modules(body: str) -> dict:
    """Run ``body`` in a fresh interpreter (cwd: the source tree); the modules it added."""
    script = "\n".join((
        "import json, sys",
        "before = set(sys.modules)",
        textwrap.dedent(body),
        "added = sorted(set(sys.modules) - before)",
        'print(json.dumps({"added": added, "out": out}))',
    ))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _loaded(added: list[str], names: list[str] | dict) -> list[str]:
    return sorted(n for n in names if n in added)


def test_import_leaves_the_multi_p_layer_and_the_executor_out() -> None:
    got = _new_modules("""
        import csp_mp
        out = None
    """)
    wrong = _loaded(got["added"], HEAVY)
    assert not wrong, "import csp_mp loaded " + "; ".join(f"{m} (for {HEAVY[m]})" for m in wrong)
    assert "csp_mp._run" in got["added"] and "greenlet" in got["added"]


def test_a_one_p_program_does_not_load_the_multi_p_layer() -> None:
    got = _new_modules("""
        import csp_mp

        def main():
            ch = csp_mp.Chan()
            csp_mp.go(ch.send, 41)
            csp_mp.sleep(0.001)
            return ch.recv() + 1

        out = csp_mp.run(main, procs=1)
    """)
    assert got["out"] == 42
    assert not _loaded(got["added"], MULTI_P)


def test_the_lazily_loaded_names_are_the_public_objects() -> None:
    got = _new_modules("""
        import csp_mp
        from csp_mp import *  # noqa: F403
        import csp_mp.futures as fut
        names = set(csp_mp.__all__)
        out = {
            "star": sorted(n for n in names if n not in globals()),
            "futures": csp_mp.futures is fut and fut.Executor.__module__,
            "map": csp_mp.map is map and map.__module__,
            "patch_blocking": patch_blocking is csp_mp.patch_blocking
                              and patch_blocking.__module__,
        }
    """)
    assert got["out"] == {"star": [], "futures": "csp_mp.futures", "map": "csp_mp",
                          "patch_blocking": "csp_mp"}
    assert "msgspec" not in got["added"]  # the executor, map and patch_blocking need none of it
