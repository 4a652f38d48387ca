"""Running out of file descriptors: the limit raised at start-up, one calm warning per interval."""

from __future__ import annotations

import errno
import logging
import resource

import pytest

from nanobot.fdlimit import ResourceErrorFilter, raise_open_file_limit


def accept_error(code: int = errno.EMFILE) -> logging.LogRecord:
    """The record asyncio logs when ``accept()`` fails for want of resources."""
    exc = OSError(code, "Too many open files")
    return logging.LogRecord(
        "asyncio",
        logging.ERROR,
        __file__,
        1,
        "socket.accept() out of system resource",
        (),
        (OSError, exc, None),
    )


def test_one_warning_per_interval_without_traceback_counting_the_rest() -> None:
    now = [0.0]
    calm = ResourceErrorFilter(interval=10, clock=lambda: now[0])
    first = accept_error()
    assert calm.filter(first)
    assert (first.levelname, first.exc_info) == ("WARNING", None)
    assert "Too many open files" in first.getMessage()
    assert "more such errors" not in first.getMessage()
    for step in range(1, 100):
        now[0] = step * 0.05
        assert not calm.filter(accept_error(errno.ENFILE))
    now[0] = 10.0
    later = accept_error()
    assert calm.filter(later)
    assert "(99 more such errors since the last warning)" in later.getMessage()


def test_other_records_pass_unchanged() -> None:
    calm = ResourceErrorFilter()
    other = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "Task exception was never retrieved", (), None
    )
    refused = accept_error(errno.ECONNREFUSED)
    assert calm.filter(other) and calm.filter(refused)
    assert (other.levelname, refused.levelname) == ("ERROR", "ERROR")
    assert refused.exc_info is not None


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 64:
        pytest.skip("the open-file limit is already tiny")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    try:
        before, after = raise_open_file_limit()
        assert before == soft - 1
        assert after == resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
