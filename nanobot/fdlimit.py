"""Open file descriptors: use all the process may have, and stay calm when they run out.

Out of descriptors, asyncio's accept loop logs an ERROR with a traceback for every failed
``accept()`` (on Python 3.11, up to ``backlog`` of them per second: thousands of lines a
second under uvicorn). :class:`ResourceErrorFilter` turns that into one WARNING per interval;
connections wait in the listen backlog meanwhile, and are accepted again once descriptors
free up (the header deadline closes idle connections, so they do).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

#: ``accept()`` errors meaning "no resources now, try again later".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Where the soft limit goes when the hard one is unlimited (the kernel refuses "unlimited").
UNLIMITED_TARGET = 1 << 20


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the limit before and after."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return (soft, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return (soft, soft)
    return (soft, target)


def is_resource_error(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


class ResourceErrorFilter(logging.Filter):
    """Passes one record about running out of descriptors per ``interval``, as a WARNING.

    The record passed has no traceback and says how many were dropped since the last one;
    every other record passes unchanged.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_resource_error(record):
            return True
        now = self._clock()
        if now < self._next:
            self._dropped += 1
            return False
        assert record.exc_info is not None
        record.msg = "cannot accept connections: %s; they wait in the listen backlog until fds free up"
        record.args = (record.exc_info[1],)
        if self._dropped:
            record.msg += " (%d more such errors since the last warning)"
            record.args += (self._dropped,)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        self._next = now + self.interval
        self._dropped = 0
        return True


def calm_resource_errors(interval: float = 10.0) -> None:
    """Install :class:`ResourceErrorFilter` on asyncio's logger (once)."""
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, ResourceErrorFilter) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(ResourceErrorFilter(interval))
