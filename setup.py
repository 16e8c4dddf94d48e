"""Build the optional compiled core; without a working C compiler the package installs pure
Python and says so in one line."""

import glob
import os
import runpy
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

LAYOUT = "csp_mp/_shm/layout.py"
LAYOUT_H = "csp_mp/_shm/c/layout.h"


def write_layout_header():
    """csp_mp/_shm/c/layout.h from layout.py, the one source of the arena's layout (rewritten
    only when it changed, so an unchanged layout rebuilds nothing)."""
    text = runpy.run_path(LAYOUT)["c_header"]()
    old = open(LAYOUT_H).read() if os.path.exists(LAYOUT_H) else None
    if old != text:
        with open(LAYOUT_H, "w") as f:
            f.write(text)


class optional_build_ext(build_ext):
    """build_ext that turns a failed compile into a one-line notice (the Python path runs)."""

    def run(self):
        write_layout_header()
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._notice(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # a compiler that fails
            self._notice(exc)

    @staticmethod
    def _notice(exc):
        print(f"csp_mp: the compiled core was not built ({type(exc).__name__}); "
              "csp_mp will run on its pure-Python path", file=sys.stderr)


setup(
    cmdclass={"build_ext": optional_build_ext},
    ext_modules=[
        Extension(
            "csp_mp._shm._core",
            sources=sorted(glob.glob("csp_mp/_shm/c/*.c")),
            depends=["csp_mp/_shm/c/core.h", LAYOUT_H, LAYOUT],
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
        )
    ],
)
