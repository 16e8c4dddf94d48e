"""Which core carries what crosses processes: the compiled one or the pure-Python path.

The compiled core (``csp_mp._shm._core``, built by the package's setuptools build when a C
compiler is there) and the Python modules of this layer run one protocol on one arena layout:
the Python modules are its readable specification. A runtime picks one when it starts, and every
P of it uses the same one:

- ``CSP_MP_NATIVE=0`` forces the Python path;
- ``CSP_MP_NATIVE=1`` makes a missing compiled core an error when a runtime starts;
- unset (or any other value): the compiled core when it was built, else the Python path.

What differs between the two: the arena's locks (robust pthread mutexes in their lines, against
named semaphores with an owner word), the doorbells (futex words in the arena, against named
semaphores), and the hot operations on rings, shared channels and atomics, done in one C call.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from csp_mp._shm.layout import DIGEST as LAYOUT_DIGEST

__all__ = ["core", "enabled", "built"]

_compiled: ModuleType | None
try:
    # the extension module by its full name: this module needs nothing of the package's
    # __init__, which imports the modules that import this one
    _compiled = importlib.import_module("csp_mp._shm._core")
except ImportError:  # no C compiler at install time, or a source tree not built
    _compiled = None
if _compiled is not None and not hasattr(_compiled, "Region"):
    _compiled = None  # not the extension (a stray directory of that name)
# a core compiled from another layout.py (a source tree changed and not rebuilt) would read the
# arena's words at other places than the Python path writes them: it is not used
_stale = _compiled is not None and getattr(_compiled, "LAYOUT_DIGEST", None) != LAYOUT_DIGEST
if _stale:
    _compiled = None

_ENV = "CSP_MP_NATIVE"


def built() -> bool:
    """True if the compiled core was built and imports."""
    return _compiled is not None


def enabled() -> bool:
    """True if a runtime starting now uses the compiled core (see the module docstring).

    Raises ``RuntimeError`` when ``CSP_MP_NATIVE=1`` and the compiled core is missing.
    """
    want = os.environ.get(_ENV, "").strip()
    if want == "0":
        return False
    if want == "1" and _stale:
        raise RuntimeError(
            "CSP_MP_NATIVE=1 but csp_mp's compiled core was built from another "
            "csp_mp/_shm/layout.py: rebuild it (`python setup.py build_ext --inplace`, or "
            "reinstall csp_mp), or unset CSP_MP_NATIVE to use the pure-Python path"
        )
    if want == "1" and _compiled is None:
        raise RuntimeError(
            "CSP_MP_NATIVE=1 but csp_mp's compiled core is not built (reinstall csp_mp with a "
            "C compiler present, e.g. `pip install --force-reinstall --no-binary csp_mp csp_mp`),"
            " or unset CSP_MP_NATIVE to use the pure-Python path"
        )
    return _compiled is not None


def core() -> ModuleType:
    """The compiled module (only when :func:`built`)."""
    if _compiled is None:
        raise RuntimeError("csp_mp's compiled core is not built")
    return _compiled
