"""Build the optional compiled core; without a C compiler the package installs pure Python."""

import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "csp_mp._shm._core",
            sources=sorted(glob.glob("csp_mp/_shm/_core/*.c")),
            depends=["csp_mp/_shm/_core/core.h"],
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
            optional=True,
        )
    ]
)
