"""``patch_blocking()``: known blocking stdlib calls park only the calling goroutine.

Opt-in, like gevent's monkey patching but limited. Once patched, these calls made *inside a
goroutine* (on the hub thread, in a goroutine's greenlet) no longer block the P:

- ``time.sleep`` becomes ``csp_mp.sleep`` (the hub's timers; ``sleep(0)`` yields);
- ``socket.socket`` blocking operations (``recv``, ``recv_into``, ``recvfrom``,
  ``recvfrom_into``, ``send``, ``sendall``, ``sendto``, ``accept``, ``connect``), the module
  functions ``create_connection``, ``getaddrinfo``, ``gethostbyname``, ``gethostbyaddr``, and the
  same methods of ``ssl.SSLSocket`` (plus ``read``, ``write``, ``do_handshake``) run on one of the
  P's M threads (``Hub.blocking``), unless the socket is non-blocking or already ready;
- ``select.select`` with a timeout other than 0 runs on an M thread;
- ``subprocess.Popen.wait`` and ``Popen.communicate`` run on an M thread;
- ``os.read``, ``os.readv`` and ``os.pread`` on a descriptor with nothing to read yet (a pipe, a
  FIFO, a terminal) run on an M thread.

Everywhere else (another thread, the hub itself, no runtime) the original functions run
unchanged. Not covered: reads through Python file objects (``open()``, ``Popen.stdout``,
``sys.stdin``: their C code calls ``read(2)`` directly), ``selectors`` and ``select.poll``/
``epoll`` objects, and names bound before patching (``from time import sleep``). Use
``csp_mp.blocking(fn, ...)`` for those.

Invariants:
- ``proc.patched`` holds every replaced attribute while patched, and is empty otherwise;
  patching twice changes nothing; unpatching restores each owner's ``__dict__`` exactly.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from . import _hub
from ._proc import proc

_SOCKET_METHODS = ("recv", "recv_into", "recvfrom", "recvfrom_into", "send", "sendall",
                   "sendto", "accept", "connect")
_READS = frozenset({"recv", "recv_into", "recvfrom", "recvfrom_into", "accept", "read"})
_SSL_METHODS = _SOCKET_METHODS + ("read", "write", "do_handshake")
_SOCKET_FUNCS = ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyaddr")


def _goroutine_hub() -> Any:
    """The hub when the caller is a goroutine of this thread's running runtime, else None."""
    hub = _hub.peek()
    if hub is None or hub.stopping:
        return None
    g = hub.current
    if g is None or g.glet is None or getcurrent() is not g.glet:
        return None
    return hub


def _ready(fileno: int, read: bool) -> bool:
    """Whether ``fileno`` can be read (or written) without blocking, right now."""
    try:
        r, w, _ = _orig_select([fileno], [], [], 0) if read else _orig_select([], [fileno], [], 0)
    except (OSError, ValueError):
        return True  # let the real call report the error
    return bool(r or w)


def _sleep(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def sleep(secs: float) -> None:
        if type(secs) not in (int, float) or secs < 0 or _goroutine_hub() is None:
            return original(secs)
        from ._time import sleep as csp_sleep

        csp_sleep(secs)

    return sleep


def _offload(original: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``original`` on an M thread when called from a goroutine."""
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hub = _goroutine_hub()
        if hub is None:
            return original(*args, **kwargs)
        return hub.blocking(original, args, kwargs)

    return wrapper


def _socket_method(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    read = name in _READS

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        hub = _goroutine_hub()
        if hub is None or self.gettimeout() == 0.0:
            return original(self, *args, **kwargs)
        if name not in ("connect", "do_handshake", "sendall") and self.fileno() >= 0 and \
                _ready(self.fileno(), read):
            return original(self, *args, **kwargs)
        return hub.blocking(original, (self, *args), kwargs)

    return method


def _select(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def select_(rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> Any:
        hub = _goroutine_hub()
        if hub is None or timeout == 0:
            return original(rlist, wlist, xlist, timeout)
        ready = original(rlist, wlist, xlist, 0)
        if any(ready):
            return ready
        return hub.blocking(original, (rlist, wlist, xlist, timeout), {})

    return select_


def _fd_read(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def read(fd: int, *args: Any) -> Any:
        hub = _goroutine_hub()
        if hub is None or _ready(fd, True):
            return original(fd, *args)
        return hub.blocking(original, (fd, *args), {})

    return read


_orig_select = select.select


def _replace(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    original = getattr(owner, name, None)
    if original is None:
        return
    proc.patched.append((owner, name, original, name in vars(owner)))
    setattr(owner, name, make(original))


def patch_blocking() -> None:
    """Make ``time.sleep``, socket operations, ``select.select``, ``subprocess`` waits and
    ``os`` reads park only the calling goroutine, when called inside one. Idempotent."""
    if proc.patched:
        return
    _replace(time, "sleep", _sleep)
    for name in _SOCKET_METHODS:
        _replace(socket.socket, name, lambda f, n=name: _socket_method(f, n))
    for name in _SOCKET_FUNCS:
        _replace(socket, name, _offload)
    try:
        import ssl
    except ImportError:  # Python built without OpenSSL
        ssl = None
    if ssl is not None:
        for name in _SSL_METHODS:
            if name in ssl.SSLSocket.__dict__:
                _replace(ssl.SSLSocket, name, lambda f, n=name: _socket_method(f, n))
    _replace(select, "select", _select)
    _replace(subprocess.Popen, "wait", _offload)
    _replace(subprocess.Popen, "communicate", _offload)
    for name in ("read", "readv", "pread"):
        _replace(os, name, _fd_read)


def unpatch_blocking() -> None:
    """Undo ``patch_blocking()`` (tests). Idempotent."""
    while proc.patched:
        owner, name, original, own = proc.patched.pop()
        if own:
            setattr(owner, name, original)
        else:  # it was inherited (socket.socket.recv comes from _socket.socket)
            delattr(owner, name)


def is_patched() -> bool:
    """Whether ``patch_blocking()`` is in effect."""
    return bool(proc.patched)


__all__ = ["is_patched", "patch_blocking", "unpatch_blocking"]
