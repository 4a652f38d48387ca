"""A backstop for teardown: pytest-timeout disarms its timer once a test fails (its
``pytest_exception_interact`` hook), so a teardown that hangs after a failure would hang the run.

:func:`teardown_watchdog` ends the run instead, as pytest-timeout's ``thread`` method does: past
its limit it prints every thread's stack to stderr and exits the process with status 1. Teardown
is bounded by itself (``tests.support.servers``); this only fires when that bound failed.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Longer than any bounded teardown (a server's stop bound plus the leftover tasks' bound).
TEARDOWN_LIMIT = 30.0


def _expire(nodeid: str, limit: float) -> None:
    stderr = sys.__stderr__ or sys.stderr  # the real one: pytest captures sys.stderr
    stderr.write(f"\n+++ teardown of {nodeid} still running after {limit:g} s: ending the run +++\n")
    faulthandler.dump_traceback(file=stderr, all_threads=True)
    stderr.flush()
    os._exit(1)


@contextmanager
def teardown_watchdog(nodeid: str, limit: float = TEARDOWN_LIMIT) -> Iterator[None]:
    """End the process if the body (a test's teardown) runs longer than ``limit`` seconds."""
    timer = threading.Timer(limit, _expire, (nodeid, limit))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
