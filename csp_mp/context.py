"""Cancellation, deadlines and values across goroutines and Ps; mirrors Go package ``context``."""

from ._context import Canceled as Canceled
from ._context import Context as Context
from ._context import DeadlineExceeded as DeadlineExceeded
from ._context import background as background
from ._context import todo as todo
from ._context import with_cancel as with_cancel
from ._context import with_deadline as with_deadline
from ._context import with_timeout as with_timeout
from ._context import with_value as with_value

__all__ = ["Canceled", "Context", "DeadlineExceeded", "background", "todo", "with_cancel",
           "with_deadline", "with_timeout", "with_value"]
