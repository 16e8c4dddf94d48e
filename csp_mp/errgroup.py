"""Goroutine groups with first-error reporting; mirrors ``golang.org/x/sync/errgroup``."""

from ._errgroup import Group as Group
from ._errgroup import with_context as with_context

__all__ = ["Group", "with_context"]
